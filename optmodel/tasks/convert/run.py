"""task=convert: HF checkpoint <-> megatron-core distributed checkpoint (backend=megatron).

hf_to_megatron builds this rank's GPTModel at the parallel= layout, fills it with
ModelOpt's HF importer (each rank reads only its shards, tensor by tensor) and saves a
megatron distributed checkpoint (with the ModelOpt state, if any) under <run dir>/model.
megatron_to_hf loads such a checkpoint (at any layout: they reshard on load; from
`run.load=<convert run dir>` or `task.load=<checkpoint dir>`) and writes a Hugging Face
checkpoint with ModelOpt's exporter under <run dir>/export.

Conversion does no arithmetic: with `backend.dtype=auto` the model holds the weights in
the dtype they are stored in (optmodel/backends/stored_dtype.py), so a bf16 checkpoint
costs its own bytes per rank, not twice them in a float32 copy that the save casts back.
"""

from __future__ import annotations

from collections import Counter
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
    cfg = ctx.cfg
    task = cfg.task
    if task.direction == "hf_to_megatron":
        handle = ctx.load_model(stored_dtype=True)
        out = ctx.save_model(handle, name="model")
    else:
        handle = ctx.load_model(source=distributed_checkpoint_dir(task.load), stored_dtype=True)
        ctx.record_model(handle)
        out = ctx.export_model(handle, "hf", task.export_dtype)
    elements = Counter()  # megatron-core's local-spec norms stay float32 whatever params_dtype says
    for param in handle.model.parameters():
        elements[str(param.dtype).removeprefix("torch.")] += param.numel()
    held = elements.most_common(1)[0][0]
    if is_rank0():
        print(f"optmodel convert ({task.direction}): {cfg.model.name} at parallel={cfg.parallel.name}, "
              f"{held} weights -> {out}", flush=True)
    return {"params_this_rank": sum(elements.values()), "weights_dtype": held}
