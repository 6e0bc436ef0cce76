"""A task that runs on one backend picks it: `task=convert` alone runs on backend=megatron.

Applied when the user (or an experiment) chose no `backend=`; a chosen backend stays and is
checked against the task's backends at validation. Fields typed for the default backend
(`backend.device=cpu`, `backend.dtype=bfloat16`) carry over to the picked one.
"""

from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig, OmegaConf, open_dict

from optmodel.config.tasks import task_spec


def backend_was_typed() -> bool:
    """Whether the command line (or an experiment) chose backend=; False outside a Hydra run."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return False
    overrides = [str(o).lstrip("+~") for o in hydra_cfg.overrides.task]
    return any(o.split("=")[0] == "backend" for o in overrides) or _experiment_sets_backend(hydra_cfg)


def _experiment_sets_backend(hydra_cfg) -> bool:
    experiment = hydra_cfg.runtime.choices.get("experiment")
    if not experiment:
        return False
    from optmodel.paths import conf_dir

    path = conf_dir() / "experiment" / f"{experiment}.yaml"
    return path.is_file() and "/backend:" in path.read_text()


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
