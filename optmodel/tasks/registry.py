"""The task registry: every module of this package (but `base`) registers one task with
`SPEC = TaskSpec(...)`. Adding a task adds a module here, conf/task/<name>.yaml and
optmodel/tasks/<name>.py; nothing else is edited."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Dict

from optmodel.tasks.spec import TaskSpec


@functools.lru_cache(maxsize=1)
def task_specs() -> Dict[str, TaskSpec]:
    specs = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name == "base":
            continue
        spec = importlib.import_module(f"{__name__}.{info.name}").SPEC
        specs[spec.name] = spec
    return specs


def task_spec(name: str) -> TaskSpec:
    specs = task_specs()
    if name not in specs:
        raise KeyError(f"unknown task {name!r}; valid: {', '.join(specs)}")
    return specs[name]
