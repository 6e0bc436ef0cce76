"""The dtype a conversion holds weights in: the one they are stored in.

Conversion (task=convert) does no arithmetic, so with `backend.dtype=auto` the model is built
in the source's stored dtype: a bf16 checkpoint costs its own bytes per rank, not twice them
in a float32 copy that the save then casts back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, open_dict

from optmodel.backends.source import resolve_source
from optmodel.facts.dtype import AUTO, checkpoint_dtype
from optmodel.facts.rundir import is_distributed_checkpoint


def weights_dtype(cfg: DictConfig, source: Optional[Path]) -> Optional[str]:
    """The dtype the source's weights are stored in: a HF checkpoint's config.json dtype, or
    the one dtype of every floating tensor of a distributed checkpoint; None when they are
    mixed (weights a quantizer folded scales into stay float32) or the checkpoint holds ModelOpt
    state (quantizer amax / scales stay as computed): the compute dtype then."""
    path, _, model_cfg = resolve_source(cfg, source)
    if path is None or not is_distributed_checkpoint(Path(path)):
        return checkpoint_dtype(model_cfg, path)
    if (Path(path) / "modelopt_state").is_dir():
        return None
    from megatron.core import dist_checkpointing

    stored = {str(t.dtype).removeprefix("torch.") for t in dist_checkpointing.load_tensors_metadata(str(path)).values()
              if t.dtype.is_floating_point}
    return stored.pop() if len(stored) == 1 else None


def holding_stored_dtype(cfg: DictConfig, source: Optional[Path]) -> DictConfig:
    """cfg with backend.dtype = the source's stored dtype when it is `auto` (else cfg itself)."""
    dtype = weights_dtype(cfg, source) if cfg.backend.dtype == AUTO else None
    if dtype is None:
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.backend.dtype = dtype
    return cfg
