"""EAGLE3 end to end on a loaded model: data -> draft vocab -> convert -> train -> export.

Online: the frozen target runs in memory and AL is measured every `al_every` steps.
Offline: the target's features come from an eagle3_features dir; only the target's
embeddings and LM head are loaded (ModelOpt's `eagle_offline` mode), so AL is measured
afterwards, by task=validate, on the target with the exported draft."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from optmodel.facts.machine import torch_device
from optmodel.speculative.checkpoint import TARGET_NOTE  # which target the draft (or checkpoint) was trained against
from optmodel.speculative.convert import DraftSpec, convert, load_offline_base, rope_theta, text_config
from optmodel.speculative.data import (
    BUNDLED_CONVERSATIONS,
    BUNDLED_PROMPTS,
    conversations,
    first_turns,
    new_account,
    resolve,
    token_rows,
)
from optmodel.speculative.ops import HFEagle3, fit_rows
from optmodel.speculative.vocab import draft_vocab

log = logging.getLogger("optmodel")
DRAFT_DIR = "draft"


def conversation_rows(tokenizer, task, account: Optional[dict] = None) -> List[dict]:
    """Token rows of task.conversations; what became of each row goes into `account`."""
    convs = conversations(resolve(task.conversations, BUNDLED_CONVERSATIONS), task.num_conversations or None,
                          account=account)
    rows = list(token_rows(tokenizer, convs, int(task.seq_len), account))
    if not rows:
        raise ValueError(f"task.conversations: no usable conversation (rows dropped by reason: "
                         f"{(account or {}).get('dropped')}). Fix: rows of {{\"messages\": [...]}} with an assistant turn.")
    return rows


def al_prompts(acc) -> List[str]:
    """The first turns of the `acceptance` block's prompt file."""
    return first_turns(resolve(acc.prompts, BUNDLED_PROMPTS), acc.num_prompts or None)


def vocab_mapping(task, rows: List[dict], vocab_size: int, out_dir: Path):
    """d2t when the draft vocabulary is smaller than the target's, else None; saved beside the draft."""
    import torch

    if not task.draft_vocab_size or task.draft_vocab_size >= vocab_size:
        return None
    d2t, t2d = draft_vocab((r["input_ids"][r["attention_mask"].bool()].tolist() for r in rows), task.draft_vocab_size, vocab_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(d2t, out_dir / "d2t.pt")
    torch.save(t2d, out_dir / "t2d.pt")
    return d2t


def online(model, tokenizer, task, run_dir: Path, seed: int,
           log_fn: Callable[[dict], None] = lambda m: None, resume: bool = False) -> Dict[str, object]:
    """`train_online` of a transformers model (backend=hf's EAGLE3 steps)."""
    return train_online(HFEagle3(model), tokenizer, task, run_dir, seed, log_fn, resume)


def train_online(ops, tokenizer, task, run_dir: Path, seed: int,
                 log_fn: Callable[[dict], None] = lambda m: None, resume: bool = False) -> Dict[str, object]:
    """Convert the loaded target, train its draft with AL checks (`ops`: the backend's EAGLE3
    steps, optmodel.speculative.ops) on the shared training stack; `resume`: from the newest
    complete checkpoint in <run_dir>/checkpoints."""
    run_dir = Path(run_dir)
    account = new_account()
    rows = conversation_rows(tokenizer, task, account)
    d2t = vocab_mapping(task, rows, ops.vocab_size, run_dir / "draft_vocab")
    ops.convert(DraftSpec.from_cfg(task), d2t=d2t, seed=seed)
    acc = task.acceptance
    prompts = al_prompts(acc)

    al_seconds = [0.0]  # AL checks run inside training: kept out of the throughput

    def measure():
        start = time.perf_counter()
        result = ops.measure(tokenizer, prompts, int(acc.max_new_tokens), int(acc.draft_steps))
        al_seconds[0] += time.perf_counter() - start
        return result

    history: List[dict] = []

    def sink(step: int, m: dict):
        history.append({"step": step, **m})
        log.info("step %d: acceptance length %.3f", step, m["acceptance_length"])
        log_fn({"step": step, "acceptance_length": m["acceptance_length"], "acceptance_rate": m["acceptance_rate"]})

    every = int(task.al_every)

    def on_step(step: int, steps: int):
        if every > 0 and (step % every == 0 or step == steps):
            sink(step, measure())

    before = measure() if every else None
    if before:
        sink(0, before)
    al_seconds[0] = 0.0
    metrics = ops.fit(rows, task, run_dir, seed, on_step, log_fn, al_seconds, resume)
    after = history[-1] if history and history[-1]["step"] == metrics["train_steps"] else (measure() if every else None)
    ops.model.eval()
    metrics.update(al_before=before["acceptance_length"] if before else None,
                   al_after=after["acceptance_length"] if after else None, al_history=history, data=account)
    return metrics


def offline(target_dir: Path, features_dir: Path, task, run_dir: Path, backend, seed: int,
            log_fn: Callable[[dict], None] = lambda m: None, resume: bool = False):
    """Train a draft from dumped features on `backend.device`; returns (model, metrics). The
    target's decoder layers are never loaded."""
    import torch

    from optmodel.speculative import features

    manifest = features.read_manifest(features_dir)
    device = torch_device(backend)
    dtype = getattr(torch, manifest["dtype"])  # what the target computed the features in
    model = load_offline_base(str(target_dir)).to(device=device, dtype=dtype)
    model.model.dtype = model.config.dtype = dtype  # FakeBaseModel's dtype attribute sizes the draft
    # FakeBaseModel's config has no rope base (the draft would train with 10000): the target's
    from transformers import AutoConfig

    model.config.rope_theta = rope_theta(text_config(AutoConfig.from_pretrained(str(target_dir))))
    spec = DraftSpec.from_cfg(task)
    spec.aux_layer_ids = list(manifest["aux_layer_ids"])
    dataset = features.FeaturesDataset(features_dir, dtype=next(model.parameters()).dtype)
    vocab_size = manifest["vocab_size"]
    d2t = vocab_mapping(task, dataset.rows, vocab_size, Path(run_dir) / "draft_vocab")
    convert(model, spec, d2t=d2t, offline=True, num_layers=manifest["num_layers"])
    metrics = fit_rows(model, dataset, task, Path(run_dir), seed, log_fn=log_fn, resume=resume, target=str(target_dir))
    model.eval()
    metrics["data"] = manifest.get("data")  # the account of the dump's rows
    return model, metrics


def draft_notes(target: str) -> Dict[str, dict]:
    """The json files written beside an exported draft: which target it was trained against."""
    return {TARGET_NOTE: {"target": str(target)}}
