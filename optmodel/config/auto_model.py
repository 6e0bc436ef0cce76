"""`model=auto model.checkpoint=DIR`: the architecture comes from DIR/config.json.

Runs where run.load's model is inherited (config/resolve.py), before validation, so an
auto model is checked like any conf/model file. Light imports only (no transformers).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from omegaconf import DictConfig, open_dict

from optmodel.config.inherit import with_model_fields
from optmodel.facts.errors import ConfigError
from optmodel.facts.hf_config import from_hf_config_dict

AUTO_FAMILY = "auto"


def is_auto(model_cfg: DictConfig) -> bool:
    return model_cfg.get("family") == AUTO_FAMILY


def auto_model_fields(checkpoint) -> dict:
    """ModelConfig fields of the checkpoint dir `checkpoint`; ConfigError naming the fix."""
    if not checkpoint:
        raise ConfigError(["model.checkpoint: model=auto reads the architecture from <dir>/config.json. "
                           "Fix: model.checkpoint=<Hugging Face checkpoint dir>."])
    path = Path(str(checkpoint)).expanduser() / "config.json"
    try:
        hf = json.loads(path.read_text())
    except OSError:
        raise ConfigError([f"model.checkpoint: model=auto needs {path}, which does not exist. Fix: "
                           f"model.checkpoint=<a Hugging Face checkpoint dir holding config.json>."]) from None
    except ValueError as err:
        raise ConfigError([f"model.checkpoint: {path} is not valid JSON ({err})."]) from None
    try:
        fields = from_hf_config_dict(hf)
    except ValueError as err:  # unsupported model_type: the message lists the supported ones
        raise ConfigError([f"model.checkpoint: model=auto: {err}. Fix: a checkpoint of a supported family."]) from None
    fields["name"] = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(checkpoint)).expanduser().resolve().name) or "auto"
    return fields


def resolve_auto_model(cfg: DictConfig) -> DictConfig:
    """cfg with an auto model's architecture filled in from its config.json (cfg unchanged
    for any other model)."""
    if not is_auto(cfg.model):
        return cfg
    fields = auto_model_fields(cfg.model.get("checkpoint"))
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model = with_model_fields(cfg.model, fields)
    return cfg
