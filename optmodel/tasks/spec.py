"""What every task spec is made of, and the checks several tasks share.

A task is registered by its package's spec.py holding `SPEC = TaskSpec(...)`: its config
schema, its config checks (light imports only: validation runs before anything heavy and for
`--cfg job`) and the backends it runs on; its run.py carries it out (optmodel/tasks/registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from omegaconf import MISSING, DictConfig

from optmodel.config.family_checks import megatron_export_problems
from optmodel.config.gate import gate_problems
from optmodel.data.mmlu import MmluOptions, data_problems as mmlu_data_problems
from optmodel.facts.errors import positive
from optmodel.facts.layout import EXPORT_TP_REFUSAL
from optmodel.facts.lm_eval_tasks import lm_eval_task_file_problems


@dataclass
class TaskConfig:
    name: str = MISSING


@dataclass(frozen=True)
class TaskSpec:
    name: str
    schema: type  # the dataclass behind conf/task/<name>.yaml
    problems: Callable[[DictConfig], List[str]]  # config checks; light imports only
    gate_problems: Callable[[DictConfig], List[str]] = gate_problems  # checks of task.gate (optmodel/config/gate.py)
    backends: Tuple[str, ...] = ("hf",)  # backends it runs on; others are refused at validation
    reads_model: bool = True  # starts from a model (accepts run.load=<run dir>)
    changes_model: bool = False  # leaves the model it was handed changed (pruned, quantized, trained)
    resumable: bool = False  # continues an unfinished run in its dir (run.resume=true), e.g. from training checkpoints
    # the config made concrete before validation (task=pipeline: each step as its own task would be)
    resolve: Optional[Callable[[DictConfig], DictConfig]] = None
    # task=pipeline step: the manifest output keys it writes, given its config and whether the model it
    # starts from is quantized (None: the task is not a pipeline step)
    outputs: Optional[Callable[[DictConfig, bool], Tuple[str, ...]]] = None
    # starts from a model an earlier run made (run.load; in a pipeline: an earlier step), e.g. export:
    # the refusal's sentence when there is none
    needs_earlier_model: Optional[str] = None
    # what a sweep of this task varies, tried in order as the x axis of its summary plot (optmodel/launch/summary.py)
    sweep_axes: Tuple[str, ...] = ()
    # options the task had under other names: old name (below task.) -> (its field now, how to convert);
    # an override of one is refused naming the new field
    renamed: Optional[Dict[str, Tuple[str, str]]] = None


def no_problems(cfg: DictConfig) -> List[str]:
    return []


@dataclass
class EvaluateConfig:
    """Accuracy of the run's model before and after an optimization (quantize, prune,
    distill), on the same model load; see optmodel.evaluation.evaluate_handle."""

    mmlu: bool = False  # measure MMLU before and after
    data_dir: Optional[str] = None  # MMLU in the cais/mmlu layout; None: the Hugging Face cache
    subjects: List[str] = field(default_factory=list)  # empty: all 57
    num_fewshot: int = 0  # MMLU few-shot examples (0-shot as the Megatron-LM example)
    fraction: float = 1.0  # first share of each subject's questions
    lower_bound: Optional[float] = None  # the run fails when MMLU accuracy after is below it
    tasks: List[str] = field(default_factory=list)  # lm-eval task names or local task YAML files
    limit: Optional[float] = None  # lm-eval tasks: examples per task (< 1: a share)
    batch_size: int = 8  # sequences per forward while scoring


def limit_problems(field_name: str, limit) -> List[str]:
    if limit is not None and limit <= 0:
        return [f"{field_name}: must be > 0 (< 1: a share of each task's examples; >= 1: a count), got {limit}."]
    return []


def evaluate_problems(evaluate: Optional[DictConfig]) -> List[str]:
    """Checks of the `task.evaluate` block optimization tasks share."""
    if evaluate is None:
        return []
    problems = []
    if evaluate.mmlu:
        problems += mmlu_data_problems(MmluOptions.from_cfg(evaluate, "task.evaluate."))
    elif evaluate.lower_bound is not None:
        problems.append("task.evaluate.lower_bound: gates MMLU accuracy, but task.evaluate.mmlu is false. "
                        "Fix: task.evaluate.mmlu=true.")
    problems += lm_eval_task_file_problems("task.evaluate.tasks", evaluate.tasks)
    problems += limit_problems("task.evaluate.limit", evaluate.limit)
    problems += positive("task.evaluate.batch_size", evaluate.batch_size)
    return problems


def export_layout_problems(cfg: DictConfig, field_name: str = "parallel.tensor") -> List[str]:
    """An export from a tensor-parallel megatron model is refused (see EXPORT_TP_REFUSAL)."""
    if cfg.backend.name == "megatron" and cfg.parallel.tensor != 1:
        return [f"{field_name}: {EXPORT_TP_REFUSAL} (parallel={cfg.parallel.name} has TP {cfg.parallel.tensor})"]
    return _expert_parallel_problems(cfg) + megatron_export_problems(cfg)


def _expert_parallel_problems(cfg: DictConfig) -> List[str]:
    """ModelOpt 0.46's Megatron exporter names the experts of megatron-core's SequentialMLP (what
    optmodel builds: per-expert Linear modules, no grouped GEMM) by their index on the rank."""
    if cfg.backend.name != "megatron" or cfg.parallel.expert == 1 or cfg.model.moe is None:
        return []
    return [f"parallel.expert: ModelOpt 0.46's Megatron exporter writes each expert-parallel rank's experts under "
            f"their local index, so an export at EP {cfg.parallel.expert} holds one rank's share of the experts "
            f"(measured: EP 2 of an 8-expert model wrote experts 0-3). Fix: parallel.expert=1 for the export "
            f"(parallel=export_pp: pipeline stages instead); a quantize run at EP > 1: task.export=false, then "
            f"task=export run.load=<that run> parallel=export_pp."]
