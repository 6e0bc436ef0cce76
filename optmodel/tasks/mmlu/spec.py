"""task=mmlu: its config and checks (see optmodel/tasks/mmlu/run.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import DictConfig

from optmodel.data.mmlu import MmluOptions, data_problems
from optmodel.tasks.spec import TaskConfig, TaskSpec


@dataclass
class MmluTaskConfig(TaskConfig):
    name: str = "mmlu"
    data_dir: Optional[str] = None  # cais/mmlu layout (<subject>/test-*.parquet, dev-*.parquet); None: HF cache
    subjects: List[str] = field(default_factory=list)  # empty: all 57
    num_fewshot: int = 0  # 0 as the Megatron-LM example; 5 is the common report (dev split examples)
    fraction: float = 1.0  # first share of each subject's questions
    batch_size: int = 8
    lower_bound: Optional[float] = None  # fail the run when accuracy is below it


def problems(cfg: DictConfig) -> List[str]:
    return data_problems(MmluOptions.from_cfg(cfg.task, "task."))


SPEC = TaskSpec(name="mmlu", schema=MmluTaskConfig, problems=problems,
                backends=("hf", "megatron"), outputs=lambda cfg, quantized: ("mmlu", "mmlu_table"))
