"""The composed config made concrete before it is validated and run: the model a run dir
produced (run.load), the backend a task runs on (task=convert: megatron), the architecture of model=auto (its config.json), and canonical
format names (of every step of a task=pipeline). The run, the dry run and the launchers' per-job checks all go through here,
so every one of them validates and records the same config."""

from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig

from optmodel.config.auto_model import resolve_auto_model
from optmodel.config.format_aliases import resolve_format_aliases
from optmodel.config.inherit import inherit_run_model
from optmodel.config.pipeline import resolve_pipeline
from optmodel.config.task_backend import apply_task_backend


def resolve_run_config(cfg: DictConfig, typed_model: bool = False, typed_backend: Optional[bool] = None) -> DictConfig:
    """`typed_backend` None: read from the Hydra run (whether backend= was chosen)."""
    cfg = apply_task_backend(cfg, typed_backend)
    cfg = resolve_auto_model(cfg)
    cfg = inherit_run_model(cfg, typed_model)
    return resolve_pipeline(resolve_format_aliases(cfg))  # task=pipeline: each step as its own task
