"""task=convert: its config and checks (see optmodel/tasks/convert/run.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

from omegaconf import DictConfig

from optmodel.facts import choices
from optmodel.facts.errors import one_of
from optmodel.tasks.spec import TaskConfig, TaskSpec, export_layout_problems


@dataclass
class ConvertTaskConfig(TaskConfig):
    name: str = "convert"
    direction: str = "hf_to_megatron"  # hf_to_megatron | megatron_to_hf
    load: Optional[str] = None  # megatron_to_hf: a distributed checkpoint dir (or use run.load=<convert run dir>)
    export_dtype: str = "bfloat16"  # megatron_to_hf: dtype of unquantized weights


def _is_distributed_checkpoint(path: Optional[str]) -> bool:
    return bool(path) and (os.path.isfile(os.path.join(path, "metadata.json"))
                           or os.path.isfile(os.path.join(path, "model", "metadata.json")))


def problems(cfg: DictConfig) -> List[str]:
    task = cfg.task
    if (p := one_of("task.direction", task.direction, choices.CONVERT_DIRECTIONS)):
        return [p]
    found = []
    if task.direction == "megatron_to_hf":
        found += export_layout_problems(cfg)
        if not cfg.run.get("load") and not _is_distributed_checkpoint(task.load):
            found.append(
                f"task.load: megatron_to_hf needs a megatron distributed checkpoint (a dir with metadata.json, or a "
                f"convert run dir holding model/), got {task.load!r}. Fix: run.load=<run dir of a hf_to_megatron convert>."
            )
    if (p := one_of("task.export_dtype", task.export_dtype, ("bfloat16", "float16", "float32"))):
        found.append(p)
    return found


SPEC = TaskSpec(name="convert", schema=ConvertTaskConfig, problems=problems,
                backends=("megatron",))
