"""task=validate: acceptance length of an EAGLE3 draft against its target (see optmodel/tasks/validate.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig

from optmodel.config.tasks.base import TaskConfig, TaskSpec
from optmodel.config.tasks.eagle3 import AcceptanceConfig, acceptance_problems, megatron_problems
from optmodel.rundir import read_origin


@dataclass
class ValidateTaskConfig(TaskConfig):
    name: str = "validate"
    draft: Optional[str] = None  # an exported draft dir; None: the `draft` output of run.load's eagle3 run
    acceptance: AcceptanceConfig = field(default_factory=AcceptanceConfig)


def draft_dir(cfg: DictConfig) -> Optional[str]:
    if cfg.task.draft:
        return cfg.task.draft
    origin = read_origin(cfg.run.get("load"))
    return ((origin or {}).get("outputs") or {}).get("draft")


def problems(cfg: DictConfig) -> List[str]:
    found = megatron_problems(cfg)
    path = draft_dir(cfg)
    if path is None:
        found.append("task.draft: no draft to validate. Fix: run.load=<an eagle3 run dir> or task.draft=<exported draft dir>.")
    elif not (Path(path).expanduser() / "config.json").is_file():
        found.append(f"task.draft: {path} holds no config.json. Fix: an eagle3 run's draft/ dir "
                     f"(export_speculative_decoding output).")
    return found + acceptance_problems(cfg.task.acceptance, "task.acceptance")


SPEC = TaskSpec(name="validate", schema=ValidateTaskConfig, problems=problems, runner="optmodel.tasks.validate",
                backends=("hf", "megatron"))
