"""task=eval: its config and checks (see optmodel/tasks/eval/run.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import DictConfig

from optmodel.facts.errors import positive
from optmodel.facts.lm_eval_tasks import lm_eval_task_file_problems
from optmodel.tasks.spec import TaskConfig, TaskSpec, limit_problems


@dataclass
class EvalTaskConfig(TaskConfig):
    name: str = "eval"
    tasks: List[str] = field(default_factory=list)  # lm-eval task names or local task YAML files
    num_fewshot: Optional[int] = None  # None: each task's own
    limit: Optional[float] = None  # examples per task (< 1: a share); None: all
    batch_size: int = 8
    max_gen_toks: int = 256  # generative tasks: most new tokens per answer
    apply_chat_template: bool = False  # prompts through the tokenizer's chat template (instruct models)
    perplexity: bool = False  # also held-out perplexity on data=


def problems(cfg: DictConfig) -> List[str]:
    task = cfg.task
    found = []
    if not task.tasks:
        found.append("task.tasks: no lm-eval task named. Fix: task.tasks=[hellaswag,arc_easy] "
                     "or task.tasks=[/path/to/task.yaml].")
    found += lm_eval_task_file_problems("task.tasks", task.tasks)
    found += limit_problems("task.limit", task.limit)
    if task.num_fewshot is not None and task.num_fewshot < 0:
        found.append(f"task.num_fewshot: must be >= 0, got {task.num_fewshot}.")
    return found + positive("task.batch_size", task.batch_size) + positive("task.max_gen_toks", task.max_gen_toks)


SPEC = TaskSpec(name="eval", schema=EvalTaskConfig, problems=problems,
                backends=("hf", "megatron"),
                outputs=lambda cfg, quantized: ("eval_results", "eval_table"))  # lm-eval task names, datasets
