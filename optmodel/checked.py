"""Config code bound to the registered tasks: the config package never imports a task, so
its entry points take every task's spec as an argument; these hand it the registry's.
What the run, the command line and tests call to resolve and check a composed config."""

from __future__ import annotations

from typing import List, Optional, Sequence

from omegaconf import DictConfig

from optmodel.config import overrides, resolve, validate as validation
from optmodel.tasks.registry import task_specs


def resolve_run_config(cfg: DictConfig, typed_model: bool = False) -> DictConfig:
    """The composed config made concrete (optmodel/config/resolve.py), the task's own step last."""
    return resolve.resolve_run_config(cfg, task_specs(), typed_model)


def config_problems(cfg: DictConfig, world_size: Optional[int] = None, check_inputs: bool = True) -> List[str]:
    """Every problem of `cfg` (optmodel/config/validate.py), the task's own asked of its spec."""
    return validation.config_problems(cfg, task_specs(), world_size=world_size, check_inputs=check_inputs)


def validate(cfg: DictConfig, world_size: Optional[int] = None, check_inputs: bool = True) -> None:
    """ConfigError listing every problem of `cfg`; quiet when it can run."""
    validation.validate(cfg, task_specs(), world_size=world_size, check_inputs=check_inputs)


def override_problems(argv: Sequence[str]) -> List[str]:
    """Problems of the command line's `key=value` overrides (optmodel/config/overrides.py)."""
    return overrides.override_problems(argv, task_specs())
