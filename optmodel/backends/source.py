"""What a model load reads: a checkpoint dir (its config.json says the architecture) or an
optmodel run dir (its manifest says the saved model and the model config it produced)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from optmodel.config.inherit import produced_model_config, with_model_fields
from optmodel.facts.checkpoint import resolve_checkpoint
from optmodel.facts.hf_config import from_hf_config_dict
from optmodel.facts.rundir import is_distributed_checkpoint, read_origin, run_dir_problems, saved_model_path


def resolve_source(cfg: DictConfig, source=None):
    """(weights path, origin manifest or None, model config) of what `load` would read."""
    source = source if source is not None else cfg.run.get("load")
    if source is None:
        return resolve_checkpoint(cfg.model), None, cfg.model
    origin = read_origin(str(source))
    if origin is None:  # a checkpoint dir: its config.json says the architecture
        path = Path(source).expanduser()
        if is_distributed_checkpoint(path):  # megatron's own: the run's model config describes it
            return path, None, cfg.model
        arch = from_hf_config_dict(json.loads((path / "config.json").read_text()))
        return path, None, with_model_fields(cfg.model, {**arch, "checkpoint": str(path)})
    problems = run_dir_problems(str(source), field="source", backend=cfg.backend.name)
    if problems:
        raise ValueError(problems[0])
    model_cfg = cfg.model
    produced = produced_model_config(str(source))
    if produced is not None and source != cfg.run.get("load"):  # the run's own model config is inherited already
        model_cfg = with_model_fields(cfg.model, produced)
    return saved_model_path(origin), origin, model_cfg
