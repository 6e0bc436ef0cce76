"""task=eagle3_features: the target's hidden states for offline EAGLE3 training (see optmodel/tasks/eagle3_features/run.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import DictConfig

from optmodel.facts.errors import positive
from optmodel.tasks.eagle3.spec import aux_layer_problems, file_problems, megatron_problems
from optmodel.tasks.spec import TaskConfig, TaskSpec


@dataclass
class Eagle3FeaturesTaskConfig(TaskConfig):
    name: str = "eagle3_features"
    conversations: Optional[str] = None  # as task=eagle3; None: the bundled set
    num_conversations: int = 0
    seq_len: int = 128
    aux_layer_ids: List[int] = field(default_factory=list)  # empty: ModelOpt's default
    shard_size: int = 64  # rows per shard file
    batch_size: int = 8
    output_dir: Optional[str] = None  # None: <run dir>/features; an unfinished dump there resumes


def problems(cfg: DictConfig) -> List[str]:
    task = cfg.task
    found = megatron_problems(cfg)
    found += aux_layer_problems(cfg)
    found += file_problems("task.conversations", task.conversations, ("messages", "conversations"),
                           '{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}')
    found += positive("task.seq_len", task.seq_len, minimum=8) + positive("task.shard_size", task.shard_size)
    return found + positive("task.batch_size", task.batch_size)


SPEC = TaskSpec(name="eagle3_features", schema=Eagle3FeaturesTaskConfig, problems=problems, backends=("hf", "megatron"), resumable=True)
