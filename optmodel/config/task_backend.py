"""A task that runs on one backend picks it: `task=convert` alone runs on backend=megatron.

Applied when the user (or an experiment) chose no `backend=`; a chosen backend stays and is
checked against the task's backends at validation. Fields typed for the default backend
(`backend.device=cpu`, `backend.dtype=bfloat16`) carry over to the picked one.
"""

from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig, OmegaConf, open_dict

from optmodel.config.chosen import group_was_chosen
from optmodel.config.tasks import task_spec


def backend_was_typed() -> bool:
    """Whether the command line (or an experiment) chose backend=."""
    return group_was_chosen("backend")


def backend_config(name: str) -> DictConfig:
    from optmodel.config.schema import BackendConfig
    from optmodel.paths import conf_dir

    return OmegaConf.merge(OmegaConf.structured(BackendConfig), OmegaConf.load(conf_dir() / "backend" / f"{name}.yaml"))


def apply_task_backend(cfg: DictConfig, typed_backend: Optional[bool] = None) -> DictConfig:
    try:
        spec = task_spec(cfg.task.name)
    except KeyError:  # validation names the unknown task
        return cfg
    wanted = spec.default_backend
    if wanted is None or cfg.backend.name == wanted:
        return cfg
    if backend_was_typed() if typed_backend is None else typed_backend:
        return cfg
    default = backend_config(cfg.backend.name)
    typed = {k: v for k, v in OmegaConf.to_container(cfg.backend, resolve=True).items()
             if k != "name" and default.get(k) != v}
    picked = backend_config(wanted)
    with open_dict(picked):
        picked = OmegaConf.merge(picked, {k: v for k, v in typed.items() if k in picked})
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.backend = picked
    return cfg
