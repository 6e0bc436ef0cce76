"""task=export: its config and checks (see optmodel/tasks/export.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from omegaconf import DictConfig

from optmodel.config import choices
from optmodel.config.errors import one_of
from optmodel.config.tasks.base import TaskConfig, TaskSpec


@dataclass
class ExportTaskConfig(TaskConfig):
    name: str = "export"
    format: str = "hf"  # hf (unified HF checkpoint, hf_quant_config.json) | vllm_fq (bf16 weights + quantizer amax)
    dtype: str = "bfloat16"  # bfloat16 | float16


def problems(cfg: DictConfig) -> List[str]:
    found = []
    if not cfg.run.get("load"):
        found.append("run.load: task=export exports the model of an earlier run. Fix: run.load=<quantize (or prune, "
                     "distill) run dir>.")
    if (p := one_of("task.format", cfg.task.format, choices.EXPORT_FORMATS)):
        found.append(p)
    if (p := one_of("task.dtype", cfg.task.dtype, ("bfloat16", "float16"))):
        found.append(p)
    return found


SPEC = TaskSpec(name="export", schema=ExportTaskConfig, problems=problems, runner="optmodel.tasks.export")
