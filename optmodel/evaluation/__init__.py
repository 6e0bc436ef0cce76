"""Evaluation of the run's model (any backend) through lm-eval: MMLU, any lm-eval task,
perplexity, generation.

`evaluate_handle` is what optimization tasks call before and after they change the model,
so one run reports accuracy before and after on the same load. Heavy imports (lm-eval,
torch) happen inside the functions: importing this package stays cheap.
"""

from __future__ import annotations

import logging
from typing import Any, Dict

from optmodel.distributed import is_rank0
from optmodel.evaluation.harness import evaluate, markdown_table, metrics_of, result_rows, split_task_specs
from optmodel.evaluation.mmlu import MmluOptions, check_lower_bound, run_mmlu

log = logging.getLogger("optmodel")


def evaluate_handle(handle, evaluate_cfg, stage: str, seed: int = 1234) -> Dict[str, Any]:
    """Metrics of `task.evaluate` on the handle's model as it is now, keyed by stage, e.g.
    {"mmlu_before": 0.61, "mmlu_macro_before": ..., "mmlu_subjects_before": {...},
    "hellaswag/acc_before": ...}. stage: "before" or "after" (the optimization).

    The MMLU `lower_bound` gates the optimized model: at any stage but "before", accuracy
    below it raises AccuracyBelowBound (the run fails) with both numbers in the message.
    """
    if evaluate_cfg is None or not (evaluate_cfg.mmlu or evaluate_cfg.tasks):
        return {}
    from optmodel.evaluation.lm_adapter import OptmodelLM

    lm = OptmodelLM(handle, batch_size=evaluate_cfg.batch_size)
    metrics: Dict[str, Any] = {}
    if evaluate_cfg.mmlu:
        opts = MmluOptions.from_cfg(evaluate_cfg, "task.evaluate.")
        result = run_mmlu(lm, opts, seed=seed)
        metrics.update({
            f"mmlu_{stage}": result.accuracy,
            f"mmlu_macro_{stage}": result.macro_accuracy,
            f"mmlu_questions_{stage}": result.questions,
            f"mmlu_subjects_{stage}": result.subject_accuracy(),
        })
        if is_rank0():
            print(f"MMLU {stage} ({result.num_fewshot}-shot):\n{result.table()}", flush=True)
        if stage != "before":
            check_lower_bound(result, opts, f"MMLU accuracy {stage}")
    if evaluate_cfg.tasks:
        names, include, all_local = split_task_specs(evaluate_cfg.tasks)
        results = evaluate(lm, names, limit=evaluate_cfg.limit, include_paths=include,
                           include_defaults=not all_local, seed=seed)
        rows = result_rows(results)
        metrics.update(metrics_of(rows, suffix=f"_{stage}"))
        if is_rank0():
            print(f"lm-eval {stage}:\n{markdown_table(rows)}", flush=True)
    return metrics
