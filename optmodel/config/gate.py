"""task.gate: the accuracy budget of a run that changes a model (quantize, prune, finetune,
distill, pipeline), measured against the base the same run measured before its change.

    optmodel task.quant_cfg=nvfp4 task.evaluate.mmlu=true task.gate.metric=mmlu task.gate.max_drop=1

Units (what users quote): a perplexity's increase in % of the base (relative: 4.0 -> 4.2 is
5.0), an accuracy's decrease in points on the 0-100 scale (absolute: 0.612 -> 0.598 is 1.4).
A run over budget ends with status `gated` (exit status 3) before it writes its model or
export (see optmodel/gate.py). Light imports only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from omegaconf import DictConfig

from optmodel.facts.lm_eval_tasks import lm_eval_task_name
from optmodel.facts.measures import drop_unit


@dataclass
class GateConfig:
    """Worst change of one accuracy metric allowed against the base measured in the same run."""

    metric: Optional[str] = None  # perplexity | mmlu | mmlu_macro | <lm-eval task>/<metric> (task.evaluate.tasks); null: no gate
    max_drop: Optional[float] = None  # perplexity: max increase in % of the base (relative); accuracy: max decrease in points, 0-100 scale (absolute)


def gate_metrics(task: DictConfig) -> Tuple[List[str], List[str]]:
    """(metric names, lm-eval task names whose "<task>/<metric>" counts) the task measures
    before and after its change."""
    names = ["perplexity"] if task.get("perplexity") else []
    evaluate = task.get("evaluate")
    lm_eval: List[str] = []
    if evaluate is not None:
        if evaluate.mmlu:
            names += ["mmlu", "mmlu_macro"]
        lm_eval = [lm_eval_task_name(spec) for spec in evaluate.tasks]
    return names, lm_eval


def one_gate_problems(gate: DictConfig, task: DictConfig, field: str, measured: Tuple[List[str], List[str]],
                      scope: Optional[str] = None, where: Optional[str] = None) -> List[str]:
    """scope: where the fix sets the measurement (default: the gate's own task config); where:
    what measures (default: the gate's task)."""
    if gate.metric is None:
        if gate.max_drop is not None:
            return [f"{field}.max_drop: set, but {field}.metric is not. Fix: {field}.metric=perplexity (or mmlu, "
                    f"or an lm-eval <task>/<metric>)."]
        return []
    metric = str(gate.metric)
    problems = []
    names, lm_eval = measured
    known = metric in names or ("/" in metric and metric.split("/")[0] in lm_eval)
    if not known:
        offered = names + [f"{t}/<metric>" for t in lm_eval]
        scope = scope or field[:-len(".gate")]
        fix = (f"{scope}.perplexity=true" if metric == "perplexity" else
               f"{scope}.evaluate.mmlu=true" if metric.startswith("mmlu") and "/" not in metric else
               f"{scope}.evaluate.tasks=[{metric.split('/')[0]}]" if "/" in metric else "a metric the run measures")
        where = where or (f"task={task.name}" if field == "task.gate" else field[:-len(".gate")])
        problems.append(f"{field}.metric: {metric!r} is not measured before and after by {where} (it measures: "
                        f"{', '.join(offered) or 'nothing'}). Fix: {fix}, or {field}.metric=<one of those>.")
    if gate.max_drop is None:
        problems.append(f"{field}.max_drop: {field}.metric={metric} needs a budget. Fix: {field}.max_drop=<the worst "
                        f"change allowed, in {drop_unit(metric)}>.")
    elif gate.max_drop < 0:
        problems.append(f"{field}.max_drop: must be >= 0 (the worst change allowed, in {drop_unit(metric)}), got "
                        f"{gate.max_drop}.")
    return problems


def gate_problems(cfg: DictConfig) -> List[str]:
    """task.gate of the run's task (a task whose spec checks its gate otherwise, e.g. over
    steps, names its own function in TaskSpec.gate_problems)."""
    task = cfg.task
    if task.get("gate") is None:
        return []
    return one_gate_problems(task.gate, task, "task.gate", gate_metrics(task))
