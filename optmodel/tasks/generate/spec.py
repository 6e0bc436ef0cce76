"""task=generate: its config and checks (see optmodel/tasks/generate/run.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import DictConfig

from optmodel.facts.errors import positive
from optmodel.tasks.spec import TaskConfig, TaskSpec


@dataclass
class GenerateTaskConfig(TaskConfig):
    name: str = "generate"
    prompts: List[str] = field(default_factory=list)
    prompts_file: Optional[str] = None  # .txt (one prompt a line) or .jsonl ({"prompt": ...})
    chat_template: bool = False  # wrap each prompt as a user turn with the tokenizer's template
    max_new_tokens: int = 64
    do_sample: bool = False  # false: greedy
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    batch_size: int = 8


def problems(cfg: DictConfig) -> List[str]:
    task = cfg.task
    found = []
    if task.prompts_file:
        if not os.path.isfile(task.prompts_file):
            found.append(f"task.prompts_file: {task.prompts_file} does not exist. Fix: a .txt file "
                         f"(one prompt a line) or .jsonl ({{\"prompt\": ...}} a line).")
    elif not task.prompts:
        found.append("task.prompts: no prompt given. Fix: task.prompts='[Once upon a time]' or task.prompts_file=FILE.")
    found += positive("task.max_new_tokens", task.max_new_tokens) + positive("task.batch_size", task.batch_size)
    if task.do_sample and task.temperature <= 0:
        found.append(f"task.temperature: sampling needs a temperature > 0, got {task.temperature}. "
                     f"Fix: task.temperature=0.7, or task.do_sample=false for greedy decoding.")
    if not 0 < task.top_p <= 1:
        found.append(f"task.top_p: must be in (0, 1], got {task.top_p}.")
    if task.top_k < 0:
        found.append(f"task.top_k: must be >= 0 (0: no cut), got {task.top_k}.")
    return found


SPEC = TaskSpec(name="generate", schema=GenerateTaskConfig, problems=problems,
                backends=("hf", "megatron"),
                outputs=lambda cfg, quantized: ("generations",))
