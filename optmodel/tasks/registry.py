"""The task registry: every package under optmodel/tasks/ holding a `spec.py` is a task.

    optmodel/tasks/<name>/spec.py   SPEC = TaskSpec(...): schema, checks, backends (light imports)
    optmodel/tasks/<name>/run.py    run(ctx) -> metrics; optionally preflight(cfg)

This module is the only one that loads a task's modules (by name, with importlib): the
entry point asks it for the specs and hands them to config code (composition, validation,
pipeline steps), and for the runner of the chosen task. Adding a task adds its package,
conf/task/<name>.yaml and its tests; nothing else is edited.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path
from typing import Callable, Dict, Optional

from omegaconf import DictConfig

from optmodel.tasks.spec import TaskSpec

TASKS_DIR = Path(__file__).resolve().parent
PACKAGE = __name__.rpartition(".")[0]


@functools.lru_cache(maxsize=1)
def task_specs() -> Dict[str, TaskSpec]:
    """Every registered task's spec, by name (only the light spec modules are imported)."""
    specs = {}
    for info in sorted(pkgutil.iter_modules([str(TASKS_DIR)]), key=lambda i: i.name):
        if info.ispkg and (TASKS_DIR / info.name / "spec.py").is_file():
            spec = importlib.import_module(f"{PACKAGE}.{info.name}.spec").SPEC
            specs[spec.name] = spec
    return specs


def task_spec(name: str) -> TaskSpec:
    specs = task_specs()
    if name not in specs:
        raise KeyError(f"unknown task {name!r}; valid: {', '.join(specs)}")
    return specs[name]


def _runner_module(name: str):
    task_spec(name)  # an unknown name fails here, naming the valid ones
    return importlib.import_module(f"{PACKAGE}.{name}.run")


def task_runner(name: str) -> Callable:
    """The `run(ctx)` of a task, imported only when dispatched (validation stays light)."""
    return _runner_module(name).run


def preflight(cfg: DictConfig) -> None:
    """The task's heavier input checks (its run module's `preflight(cfg)`, e.g. lm-eval task
    names), before any run dir is claimed."""
    hook: Optional[Callable] = getattr(_runner_module(cfg.task.name), "preflight", None)
    if hook is not None:
        hook(cfg)
