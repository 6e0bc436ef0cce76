"""task=eval: any lm-eval tasks (names or local task YAML files) on the run's model.

Writes eval_results.json (lm-eval's results, groups and sample counts) and
eval_results.md (one row per task and metric) in the run dir; the metrics go to the
manifest as "<task>/<metric>".
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict

from optmodel.config.errors import ConfigError, one_of
from optmodel.distributed import is_rank0
from optmodel.evaluation.harness import (
    evaluate, markdown_table, metrics_of, result_rows, split_task_specs, task_manager,
)

log = logging.getLogger("optmodel")


def check_task_names(names, manager) -> None:
    """Unknown task names fail before the model loads, with close matches."""
    known = manager.all_tasks
    problems = [p for name in names if (p := one_of("task.tasks", name, known))]
    if problems:
        # the full list is thousands of names: keep the suggestions, point at the listing
        problems = [p.split(" Valid:")[0] + " Fix: `lm-eval ls tasks` lists every name." for p in problems]
        raise ConfigError(problems)


def _offline_miss(err: BaseException) -> bool:
    """Whether a task failed to load because its dataset is not local and the hub is out of reach."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ConnectionError) or type(err).__name__ in (
            "OfflineModeIsEnabled", "LocalEntryNotFoundError", "DatasetNotFoundError"
        ):
            return True
        err = err.__cause__ or err.__context__
    return False


def preload_tasks(names, manager) -> None:
    """Build every task (and read its data) before the model loads: a dataset that is not
    available offline fails here with what to do, not after minutes of model loading."""
    try:
        manager.load(list(names))
    except Exception as err:
        if not _offline_miss(err):
            raise
        raise ConfigError([
            f"task.tasks: a task's dataset is not available: {err}. lm-eval tasks read their datasets from the "
            f"Hugging Face hub and nothing is downloaded offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE). Fix: run "
            f"the task once where there is network (it fills the local cache), or point task.tasks at a local task "
            f"YAML over local files (dataset_path: json, dataset_kwargs.data_files)."
        ]) from err


def run(ctx) -> Dict[str, Any]:
    cfg, task = ctx.cfg, ctx.cfg.task
    names, include, all_local = split_task_specs(task.tasks)
    manager = task_manager(include, include_defaults=not all_local)
    check_task_names(names, manager)
    preload_tasks(names, manager)
    handle = ctx.load_model()
    from optmodel.evaluation.lm_adapter import OptmodelLM

    lm = OptmodelLM(handle, batch_size=task.batch_size, max_gen_toks=task.max_gen_toks)
    results = evaluate(lm, names, num_fewshot=task.num_fewshot, limit=task.limit, manager=manager,
                       seed=cfg.run.seed, apply_chat_template=task.apply_chat_template)
    rows = result_rows(results)
    metrics: Dict[str, Any] = metrics_of(rows)
    if task.perplexity:
        from optmodel.evaluation.perplexity import dataset_perplexity

        metrics["perplexity"], metrics["eval_tokens"] = dataset_perplexity(handle, cfg.data)
    saved = {k: results.get(k) for k in ("results", "groups", "n-samples", "versions", "n-shot", "higher_is_better")}
    ctx.write_file("eval_results", "eval_results.json", json.dumps(saved, indent=2, default=str) + "\n")
    ctx.write_file("eval_table", "eval_results.md", markdown_table(rows))
    if is_rank0():
        print(f"optmodel eval: {cfg.model.name}\n{markdown_table(rows)}", end="", flush=True)
        if "perplexity" in metrics:
            print(f"perplexity {metrics['perplexity']:.3f} on {metrics['eval_tokens']} held-out tokens", flush=True)
    ctx.tracker.log(metrics)
    return metrics
