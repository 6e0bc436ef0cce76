"""Model handles: `load` gives any task the run's model, or a second one, on the run's backend.

    handle = load(cfg)                    # run.load=<run dir> if set, else model.checkpoint
    teacher = load(cfg, source=PATH)      # a checkpoint dir or an optmodel run dir

Both come back with the same methods (optmodel/backends/handle.py): tasks never ask which
backend they are on. A run dir is read through its manifest: its saved model (the
restorable copy, quantizer state included) and the architecture it recorded.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from omegaconf import DictConfig, open_dict

from optmodel.backends.handle import ModelHandle
from optmodel.backends.source import resolve_source
from optmodel.backends.stored_dtype import holding_stored_dtype

__all__ = ["ModelHandle", "load", "resolve_source", "train_eagle3_offline"]


def load(cfg: DictConfig, source=None, stored_dtype: bool = False) -> ModelHandle:
    """The handle of `source` (a HF checkpoint dir or an optmodel run dir; default: the run's
    model) on cfg's backend and device. stored_dtype: backend.dtype=auto holds the weights in
    the dtype they are stored in (optmodel/backends/stored_dtype.py); the handle's cfg says so."""
    if stored_dtype:
        cfg = holding_stored_dtype(cfg, source)
    path, origin, model_cfg = resolve_source(cfg, source)
    if source is not None and str(source) != str(cfg.run.get("load")) and model_cfg.get("checkpoint"):
        # a second model (a teacher) goes by its own name; only where the name does not locate
        # its weights (a bundled tiny model without model.checkpoint is found by its name)
        model_cfg = model_cfg.copy()
        with open_dict(model_cfg):
            model_cfg.name = (origin or {}).get("model") or Path(str(source)).name
    if model_cfg is not cfg.model:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.model = model_cfg
    backend = importlib.import_module(f"optmodel.backends.{cfg.backend.name}")
    return backend.load(cfg, path, origin)


def train_eagle3_offline(cfg: DictConfig, load_target, features_dir, run_dir, log_fn):
    """An EAGLE3 draft trained from an eagle3_features dump on cfg's backend: (the backend's
    EAGLE3 steps holding it, optmodel.speculative.ops; train metrics). `load_target()` gives
    the target's handle where the backend needs it (megatron); hf reads only the target's
    embeddings and LM head."""
    backend = importlib.import_module(f"optmodel.backends.{cfg.backend.name}")
    return backend.train_eagle3_offline(cfg, load_target, Path(features_dir), Path(run_dir), log_fn)
