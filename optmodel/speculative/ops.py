"""The EAGLE3 steps a backend performs on its target, behind one interface (what
`handle.eagle3()` returns; optmodel.speculative.workflow drives them):

    ops.vocab_size                        the target's vocabulary
    ops.convert(spec, d2t, seed)          `mtsp.convert` in place: target frozen, draft trainable
    ops.measure(tokenizer, prompts, ...)  acceptance length (optmodel.speculative.acceptance)
    ops.fit(rows, task, run_dir, seed, on_step, log_fn, paused, resume) -> train metrics (task.training:
                                          the training stack every training task shares)
    ops.export_draft(out_dir, notes, deploy)  the serving layout in `deploy`'s conventions
                                          (collective; one rank writes)
    ops.attach(draft_dir)                 an exported draft back onto the target
    ops.dump_features(rows, out_dir, aux_ids, shard_size, target, batch_size, data)
                                          offline features (optmodel.speculative.features), one format

This module holds backend=hf's (ModelOpt's HF EAGLE plugin, optmodel.training.loop.fit);
backend=megatron's is optmodel.speculative.megatron_eagle.MegatronEagle3."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional

from optmodel.distributed import is_rank0
from optmodel.speculative import draft
from optmodel.speculative.checkpoint import draft_trainer, target_identity
from optmodel.speculative.convert import convert, text_config
from optmodel.speculative.data import RowsDataset, collate, real_tokens_per_row
from optmodel.training.precision import compute_autocast


class HFEagle3:
    def __init__(self, model):
        self.model = model

    @property
    def vocab_size(self) -> int:
        return int(text_config(self.model.config).vocab_size)

    def convert(self, spec, d2t=None, seed: int = 0):
        import torch

        torch.manual_seed(seed)  # the draft's initialisation: the same draft for the same run.seed
        return convert(self.model, spec, d2t=d2t)

    def measure(self, tokenizer, prompts: List[str], max_new_tokens: int = 64, draft_steps: int = 7) -> dict:
        from optmodel.speculative import acceptance

        with compute_autocast(self.model):  # mid-training: fp32 draft weights, target in its dtype
            return acceptance.measure(self.model, tokenizer, prompts, max_new_tokens, draft_steps)

    def fit(self, rows: List[dict], task, run_dir: Path, seed: int, on_step: Optional[Callable[[int, int], None]] = None,
            log_fn: Callable[[dict], None] = lambda m: None, paused: Optional[List[float]] = None,
            resume: bool = False) -> Dict[str, object]:
        return fit_rows(self.model, RowsDataset(rows), task, Path(run_dir), seed, on_step=on_step, log_fn=log_fn,
                        paused=paused, resume=resume)

    def export_draft(self, out_dir: Path, notes: Optional[Dict[str, dict]] = None, deploy: str = "none") -> Path:
        if is_rank0():
            draft.export(self.model, out_dir, notes=notes, deploy=deploy)
        return Path(out_dir)

    def attach(self, draft_dir: Path):
        return draft.attach(self.model, draft_dir)

    def dump_features(self, rows, out_dir: Path, aux_ids: List[int], shard_size: int, target: str, batch_size: int,
                      data: Optional[dict] = None):
        from optmodel.speculative import features

        return features.dump(self.model, rows, out_dir, aux_ids, shard_size, target, batch_size, data=data)


class RowLog:
    """A tracker (`.log(row)`) over a plain function: the training stack logs `train/<name>` rows to it."""

    def __init__(self, log_fn: Callable[[dict], None]):
        self.log = log_fn


def fit_rows(model, dataset, task, run_dir: Path, seed: int, *, on_step: Optional[Callable[[int, int], None]] = None,
             log_fn: Callable[[dict], None] = lambda m: None, paused: Optional[List[float]] = None,
             resume: bool = False, target: Optional[str] = None) -> Dict[str, object]:
    """The draft trained on `dataset` by the shared training stack (optmodel.training.loop.fit,
    task.training), with a Trainer whose checkpoints hold the draft only and name `target` (default:
    the model's own checkpoint); a resume against another target is refused."""
    from optmodel.training.checkpoints import CHECKPOINTS_DIR
    from optmodel.training.loop import fit

    identity = target_identity(model, target or getattr(model.config, "_name_or_path", None))
    result = fit(model, task.training, dataset, output_dir=Path(run_dir) / CHECKPOINTS_DIR, seed=seed, resume=resume,
                 tracker=RowLog(log_fn), on_step=on_step, trainer_class=draft_trainer(identity), data_collator=collate)
    return throughput(result.metrics, task, real_tokens_per_row(dataset), paused)


def throughput(metrics: Dict[str, object], task, tokens_per_row: float,
               paused: Optional[List[float]] = None) -> Dict[str, object]:
    """The training stack's metrics with tokens seen (`tokens_per_row`: real, unpadded tokens of
    a row) and training tokens/s over the steps this run trained, without the `paused[0]`
    seconds the step hooks spent measuring AL."""
    seconds = max(float(metrics["train_seconds"]) - (paused[0] if paused else 0.0), 1e-9)
    per_step = int(task.training.global_batch_size) * tokens_per_row
    trained_here = int(metrics["train_steps"]) - int(metrics.get("train_resumed_from_step") or 0)
    return {**metrics, "train_seconds": seconds, "train_tokens": round(int(metrics["train_steps"]) * per_step),  # resumed runs too
            "train_tokens_per_second": trained_here * per_step / seconds}
