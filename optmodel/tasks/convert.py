"""task=convert: HF checkpoint <-> megatron-core distributed checkpoint (backend=megatron).

hf_to_megatron builds this rank's GPTModel at the parallel= layout, fills it with
ModelOpt's HF importer (each rank reads only its shards) and saves a megatron
distributed checkpoint (with the ModelOpt state, if any) under <run dir>/model.
megatron_to_hf loads such a checkpoint (at any layout: they reshard on load; from
`run.load=<convert run dir>` or `task.load=<checkpoint dir>`) and writes a Hugging Face
checkpoint with ModelOpt's exporter under <run dir>/export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from optmodel.distributed import is_rank0


def distributed_checkpoint_dir(load: Optional[str]) -> Optional[Path]:
    """task.load may name the checkpoint itself or a run dir holding model/."""
    if not load:
        return None
    path = Path(load).expanduser()
    nested = path / "model"
    return nested if (nested / "metadata.json").is_file() else path


def run(ctx) -> Dict[str, Any]:
    cfg, task = ctx.cfg, ctx.cfg.task
    if task.direction == "hf_to_megatron":
        handle = ctx.load_model()
        out = ctx.save_model(handle, name="model")
    else:
        handle = ctx.load_model(source=distributed_checkpoint_dir(task.load))
        ctx.record_model(handle)
        out = ctx.export_model(handle, "hf", task.export_dtype)
    params = sum(p.numel() for p in handle.model.parameters())
    if is_rank0():
        print(f"optmodel convert ({task.direction}): {cfg.model.name} at parallel={cfg.parallel.name} -> {out}", flush=True)
    return {"params_this_rank": params}
