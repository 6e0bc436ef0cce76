"""task=mmlu: MMLU accuracy of the run's model through lm-eval (see optmodel.evaluation.mmlu).

Writes mmlu.json (per-subject and average accuracies) and mmlu.txt (the table) in the run
dir; `lower_bound` turns the run into a gate that fails below it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict

from optmodel.distributed import is_rank0
from optmodel.evaluation.mmlu import MmluOptions, check_lower_bound, locate, run_mmlu

log = logging.getLogger("optmodel")


def run(ctx) -> Dict[str, Any]:
    cfg = ctx.cfg
    opts = MmluOptions.from_cfg(cfg.task, "task.")
    locate(opts)  # missing data fails here, before the model loads
    handle = ctx.load_model()
    from optmodel.evaluation.lm_adapter import OptmodelLM

    result = run_mmlu(OptmodelLM(handle, batch_size=opts.batch_size), opts, seed=cfg.run.seed)
    metrics = {
        "mmlu": result.accuracy,
        "mmlu_macro": result.macro_accuracy,
        "mmlu_correct": result.correct,
        "mmlu_questions": result.questions,
        "mmlu_subjects": result.subject_accuracy(),
    }
    # model-parallel runs: every rank computed the same numbers; rank 0 writes and reports
    ctx.write_file("mmlu", "mmlu.json", json.dumps(result.to_json(), indent=2) + "\n")
    ctx.write_file("mmlu_table", "mmlu.txt", result.table() + "\n")
    if is_rank0():
        print(f"optmodel mmlu: {cfg.model.name}, {result.num_fewshot}-shot, {len(result.subjects)} subjects\n"
              f"{result.table()}", flush=True)
    ctx.log_metrics(metrics)  # recorded even when the bound below fails the run
    check_lower_bound(result, opts)
    return metrics
