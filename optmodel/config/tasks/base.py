"""What every task spec is made of, and the checks several tasks share.

A task is registered by one module in this package holding `SPEC = TaskSpec(...)`: its
config schema, its config checks (light imports only: validation runs before anything
heavy and for `--cfg job`), the backends it runs on and the module that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from omegaconf import MISSING, DictConfig

from optmodel.config.errors import positive
from optmodel.data.mmlu import MmluOptions, data_problems as mmlu_data_problems


@dataclass
class TaskConfig:
    name: str = MISSING


@dataclass(frozen=True)
class TaskSpec:
    name: str
    schema: type  # the dataclass behind conf/task/<name>.yaml
    problems: Callable[[DictConfig], List[str]]  # config checks; light imports only
    runner: str  # module whose run(ctx) carries the task out
    backends: Tuple[str, ...] = ("hf",)  # backends it runs on; others are refused at validation
    reads_model: bool = True  # starts from a model (accepts run.load=<run dir>)
    resumable: bool = False  # continues an unfinished run in its dir (run.resume=true), e.g. from training checkpoints
    preflight: Optional[str] = None  # "module:function(cfg)": heavier input checks run before the run dir is claimed
    # task=pipeline step: the manifest output keys it writes, given its config and whether the model it
    # starts from is quantized (None: the task is not a pipeline step)
    outputs: Optional[Callable[[DictConfig, bool], Tuple[str, ...]]] = None
    # starts from a model an earlier run made (run.load; in a pipeline: an earlier step), e.g. export:
    # the refusal's sentence when there is none
    needs_earlier_model: Optional[str] = None
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


EXPORT_TP_REFUSAL = (
    "export to Hugging Face needs parallel.tensor=1: ModelOpt's Megatron exporter writes each "
    "rank's tensor shard as if it were the whole weight (it does not gather tensor-parallel shards). "
    "Fix: parallel=export_pp (TP 1, pipeline stages instead; set parallel.pipeline to what fits)."
)


def export_layout_problems(cfg: DictConfig, field_name: str = "parallel.tensor") -> List[str]:
    """An export from a tensor-parallel megatron model is refused (see EXPORT_TP_REFUSAL)."""
    if cfg.backend.name == "megatron" and cfg.parallel.tensor != 1:
        return [f"{field_name}: {EXPORT_TP_REFUSAL} (parallel={cfg.parallel.name} has TP {cfg.parallel.tensor})"]
    return _expert_parallel_problems(cfg)


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
