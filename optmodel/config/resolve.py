"""The composed config made concrete before it is validated and run: the model a run dir
produced (run.load), the architecture of model=auto (its config.json), and canonical format
names (and what the task's spec resolves, e.g. each step of a task=pipeline). The run, the dry run and the launchers' per-job checks all go through here, so every
one of them validates and records the same config. (The backend of a task that runs on one
backend is picked earlier, by its conf/task YAML, so `--cfg job` shows it.)"""

from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, open_dict

from optmodel.config.auto_model import resolve_auto_model
from optmodel.config.family_checks import attention_implementation
from optmodel.config.format_aliases import resolve_format_aliases
from optmodel.config.inherit import inherit_run_model


def resolve_run_config(cfg: DictConfig, specs: Mapping[str, Any], typed_model: bool = False) -> DictConfig:
    """specs: every task's spec by name (the registry's); the chosen task's own `resolve` runs last."""
    cfg = resolve_auto_model(cfg)
    cfg = inherit_run_model(cfg, typed_model)
    cfg = resolve_attention(cfg)
    cfg = resolve_format_aliases(cfg)
    spec = specs.get(cfg.task.get("name"))
    return spec.resolve(cfg) if spec is not None and spec.resolve is not None else cfg


def resolve_attention(cfg: DictConfig) -> DictConfig:
    """backend.attn_implementation=auto made concrete for the (possibly inherited) model."""
    concrete = attention_implementation(cfg.backend, cfg.model)
    if cfg.backend.get("attn_implementation") == concrete:
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.backend.attn_implementation = concrete
    return cfg
