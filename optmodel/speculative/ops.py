"""The EAGLE3 steps a backend performs on its target, behind one interface (what
`handle.eagle3()` returns; optmodel.speculative.workflow drives them):

    ops.vocab_size                        the target's vocabulary
    ops.convert(spec, d2t, seed)          `mtsp.convert` in place: target frozen, draft trainable
    ops.measure(tokenizer, prompts, ...)  acceptance length (optmodel.speculative.acceptance)
    ops.fit(rows, task, run_dir, seed, on_step, log_fn, paused) -> train metrics
    ops.export_draft(out_dir, notes, deploy)  the serving layout in `deploy`'s conventions
                                          (collective; one rank writes)
    ops.attach(draft_dir)                 an exported draft back onto the target
    ops.dump_features(rows, out_dir, aux_ids, shard_size, target, batch_size, data)
                                          offline features (optmodel.speculative.features), one format

This module holds backend=hf's (ModelOpt's HF EAGLE plugin, transformers' Trainer);
backend=megatron's is optmodel.speculative.megatron_eagle.MegatronEagle3."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional


class HFEagle3:
    def __init__(self, model):
        self.model = model

    @property
    def vocab_size(self) -> int:
        from optmodel.speculative.convert import text_config

        return int(text_config(self.model.config).vocab_size)

    def convert(self, spec, d2t=None, seed: int = 0):
        from optmodel.speculative.convert import convert

        return convert(self.model, spec, d2t=d2t)

    def measure(self, tokenizer, prompts: List[str], max_new_tokens: int = 64, draft_steps: int = 7) -> dict:
        from optmodel.speculative import acceptance
        from optmodel.training.precision import compute_autocast

        with compute_autocast(self.model):  # mid-training: fp32 draft weights, target in its dtype
            return acceptance.measure(self.model, tokenizer, prompts, max_new_tokens, draft_steps)

    def fit(self, rows: List[dict], task, run_dir: Path, seed: int, on_step: Optional[Callable[[int, int], None]] = None,
            log_fn: Callable[[dict], None] = lambda m: None, paused: Optional[List[float]] = None) -> Dict[str, object]:
        from optmodel.speculative import train
        from optmodel.speculative.data import RowsDataset

        callbacks = [train.metrics_callback(log_fn)]
        if on_step is not None:
            callbacks.append(train.step_callback(on_step))
        return fit_rows(self.model, RowsDataset(rows), task, Path(run_dir), seed, callbacks, paused)

    def export_draft(self, out_dir: Path, notes: Optional[Dict[str, dict]] = None, deploy: str = "none") -> Path:
        from optmodel.distributed import is_rank0
        from optmodel.speculative import draft

        if is_rank0():
            draft.export(self.model, out_dir, notes=notes, deploy=deploy)
        return Path(out_dir)

    def attach(self, draft_dir: Path):
        from optmodel.speculative import draft

        return draft.attach(self.model, draft_dir)

    def dump_features(self, rows, out_dir: Path, aux_ids: List[int], shard_size: int, target: str, batch_size: int,
                      data: Optional[dict] = None):
        from optmodel.speculative import features

        return features.dump(self.model, rows, out_dir, aux_ids, shard_size, target, batch_size, data=data)


def fit_rows(model, dataset, task, run_dir: Path, seed: int, callbacks: List,
             paused: Optional[List[float]] = None, target: Optional[str] = None) -> Dict[str, object]:
    """transformers' Trainer over `dataset` (optmodel.speculative.train); throughput without
    the `paused[0]` seconds the callbacks spent measuring AL. Checkpoints name `target` (default:
    the model's own checkpoint) and are refused on resume against another."""
    from optmodel.speculative import train
    from optmodel.speculative.checkpoint import target_identity

    model.train()
    identity = target_identity(model, target or getattr(model.config, "_name_or_path", None))
    _, result = train.train(model, dataset, task, run_dir / train.CHECKPOINTS, seed, callbacks,
                            resume=bool(task.resume), target=identity)
    tokens = int(task.max_steps) * int(task.batch_size) * int(task.grad_accum) * int(task.seq_len)
    runtime = max(float(result.metrics.get("train_runtime", 0.0)) - (paused[0] if paused else 0.0), 1e-9)
    seen = int(result.global_step) * int(task.batch_size) * int(task.grad_accum) * int(task.seq_len)
    return {"train_loss": float(result.training_loss), "train_steps": int(result.global_step), "train_tokens": seen,
            "train_seconds": runtime, "train_tokens_per_second": tokens / runtime}
