"""EAGLE3 end to end on a loaded model: data -> draft vocab -> convert -> train -> export.

Online: the frozen target runs in memory and AL is measured every `al_every` steps.
Offline: the target's features come from an eagle3_features dir; only the target's
embeddings and LM head are loaded (ModelOpt's `eagle_offline` mode), so AL is measured
afterwards, by task=validate, on the target with the exported draft."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

log = logging.getLogger("optmodel")
DRAFT_DIR = "draft"
TARGET_NOTE = "optmodel_target.json"  # which target the draft was trained against


def conversation_rows(tokenizer, task) -> List[dict]:
    from optmodel.speculative.data import BUNDLED_CONVERSATIONS, conversations, resolve, token_rows

    convs = conversations(resolve(task.conversations, BUNDLED_CONVERSATIONS), task.num_conversations or None)
    return list(token_rows(tokenizer, convs, int(task.seq_len)))


def al_prompts(acc) -> List[str]:
    """The first turns of the `acceptance` block's prompt file."""
    from optmodel.speculative.data import BUNDLED_PROMPTS, first_turns, resolve

    return first_turns(resolve(acc.prompts, BUNDLED_PROMPTS), acc.num_prompts or None)


def vocab_mapping(task, rows: List[dict], vocab_size: int, out_dir: Path):
    """d2t when the draft vocabulary is smaller than the target's, else None; saved beside the draft."""
    import torch

    from optmodel.speculative.vocab import draft_vocab

    if not task.draft_vocab_size or task.draft_vocab_size >= vocab_size:
        return None
    d2t, t2d = draft_vocab((r["input_ids"][r["attention_mask"].bool()].tolist() for r in rows), task.draft_vocab_size, vocab_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(d2t, out_dir / "d2t.pt")
    torch.save(t2d, out_dir / "t2d.pt")
    return d2t


def _train(model, dataset, task, run_dir: Path, seed: int, callbacks: List,
           al_seconds: Sequence[float] = (0.0,)) -> dict:
    from optmodel.speculative import train

    model.train()
    _, result = train.train(model, dataset, task, run_dir / train.CHECKPOINTS, seed, callbacks,
                            resume=bool(task.resume))
    tokens = int(task.max_steps) * int(task.batch_size) * int(task.grad_accum) * int(task.seq_len)
    runtime = max(float(result.metrics.get("train_runtime", 0.0)) - al_seconds[0], 1e-9)
    return {"train_loss": float(result.training_loss), "train_steps": int(result.global_step),
            "train_seconds": runtime, "train_tokens_per_second": tokens / runtime}


def online(model, tokenizer, task, run_dir: Path, seed: int,
           log_fn: Callable[[dict], None] = lambda m: None) -> Dict[str, object]:
    """Convert the loaded target, train its draft with AL checks, export it."""
    from optmodel.speculative import acceptance, train
    from optmodel.speculative.convert import DraftSpec, convert
    from optmodel.speculative.data import RowsDataset
    from optmodel.training.precision import compute_autocast

    run_dir = Path(run_dir)
    rows = conversation_rows(tokenizer, task)
    vocab_size = (getattr(model.config, "text_config", None) or model.config).vocab_size
    d2t = vocab_mapping(task, rows, vocab_size, run_dir / "draft_vocab")
    convert(model, DraftSpec.from_cfg(task), d2t=d2t)
    acc = task.acceptance
    prompts = al_prompts(acc)

    al_seconds = [0.0]  # AL checks run inside Trainer.train: kept out of the throughput

    def measure():
        start = time.perf_counter()
        with compute_autocast(model):  # mid-training: fp32 draft weights, target in its dtype
            result = acceptance.measure(model, tokenizer, prompts, int(acc.max_new_tokens), int(acc.draft_steps))
        al_seconds[0] += time.perf_counter() - start
        return result

    history: List[dict] = []

    def sink(step: int, m: dict):
        history.append({"step": step, **m})
        log.info("step %d: acceptance length %.3f", step, m["acceptance_length"])
        log_fn({"step": step, "acceptance_length": m["acceptance_length"], "acceptance_rate": m["acceptance_rate"]})

    before = measure() if task.al_every else None
    if before:
        sink(0, before)
    al_seconds[0] = 0.0
    callbacks = [train.metrics_callback(log_fn)]
    if task.al_every:
        callbacks.append(train.acceptance_callback(int(task.al_every), measure, sink))
    metrics = _train(model, RowsDataset(rows), task, run_dir, seed, callbacks, al_seconds)
    after = history[-1] if history and history[-1]["step"] == metrics["train_steps"] else (measure() if task.al_every else None)
    model.eval()
    metrics.update(al_before=before["acceptance_length"] if before else None,
                   al_after=after["acceptance_length"] if after else None, al_history=history)
    return metrics


def offline(target_dir: Path, features_dir: Path, task, run_dir: Path, backend, seed: int,
            log_fn: Callable[[dict], None] = lambda m: None):
    """Train a draft from dumped features on `backend.device`; returns (model, metrics). The
    target's decoder layers are never loaded."""
    import torch

    from optmodel.backends.handle import pick_device
    from optmodel.speculative import features, train
    from optmodel.speculative.convert import DraftSpec, convert, load_offline_base

    manifest = features.read_manifest(features_dir)
    device = pick_device(backend)
    dtype = getattr(torch, manifest["dtype"])  # what the target computed the features in
    model = load_offline_base(str(target_dir)).to(device=device, dtype=dtype)
    model.model.dtype = model.config.dtype = dtype  # FakeBaseModel's dtype attribute sizes the draft
    spec = DraftSpec.from_cfg(task)
    spec.aux_layer_ids = list(manifest["aux_layer_ids"])
    dataset = features.FeaturesDataset(features_dir, dtype=next(model.parameters()).dtype)
    vocab_size = manifest["vocab_size"]
    d2t = vocab_mapping(task, dataset.rows, vocab_size, Path(run_dir) / "draft_vocab")
    convert(model, spec, d2t=d2t, offline=True, num_layers=manifest["num_layers"])
    metrics = _train(model, dataset, task, Path(run_dir), seed, [train.metrics_callback(log_fn)])
    model.eval()
    return model, metrics


def export_draft(model, run_dir: Path, target: str) -> Path:
    """The draft in the serving layout, with a note naming its target."""
    from optmodel.speculative.draft import export

    return export(model, Path(run_dir) / DRAFT_DIR, notes={TARGET_NOTE: {"target": str(target)}})
