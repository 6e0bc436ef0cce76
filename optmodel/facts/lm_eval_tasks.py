"""lm-eval task entries of a config (`task.tasks`, `task.evaluate.tasks`): a task or group
name, or a local task YAML file, read without importing lm-eval."""

from __future__ import annotations

from pathlib import Path
from typing import List


def lm_eval_task_file_problems(field_name: str, specs) -> List[str]:
    problems = []
    for spec in specs:
        if str(spec).endswith((".yaml", ".yml")) and not Path(str(spec)).expanduser().is_file():
            problems.append(f"{field_name}: task file {spec} does not exist. Fix: the path of an lm-eval task YAML, "
                            f"or an lm-eval task name.")
    return problems


def lm_eval_task_name(spec) -> str:
    """The lm-eval task a `tasks` entry stands for: a local task YAML file's `task:` / `group:`
    key (else the file's stem), or the entry itself (a task or group name)."""
    path = Path(str(spec)).expanduser()
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return str(spec)
    import yaml

    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    name = doc.get("task") or doc.get("group")
    return name if isinstance(name, str) else path.stem
