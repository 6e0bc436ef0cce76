"""task=eval: any lm-eval tasks (names or local task YAML files) on the run's model.

Writes eval_results.json (lm-eval's results, groups and sample counts) and
eval_results.md (one row per task and metric) in the run dir; the metrics go to the
manifest as "<task>/<metric>".
"""

from __future__ import annotations

import json
import logging
from typing import Any, Dict

from optmodel.distributed import is_rank0
from optmodel.evaluation.harness import (
    evaluate, markdown_table, metrics_of, result_rows, split_task_specs, task_manager,
)
from optmodel.evaluation.task_index import cached_task_names, close_names, store_task_names
from optmodel.facts.errors import ConfigError

log = logging.getLogger("optmodel")


def check_task_names(names, known) -> None:
    """Unknown task names fail before the model loads, with the names that look like them."""
    known = set(known)
    problems = []
    for name in (n for n in names if n not in known):
        close = close_names(name, known)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        problems.append(f"task.tasks: unknown value {name!r}.{hint} Fix: `lm-eval ls tasks` lists every name "
                        f"(or task.tasks=[<a local task YAML file>]).")
    if problems:
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


_PREFLIGHT: Dict[str, Any] = {}  # the task index the preflight built, reused by the run


def preflight(cfg) -> None:
    """Before the run dir is claimed: unknown task names and datasets missing offline are
    config errors (exit 2), found before the model loads. Names are checked against the
    cached list of lm-eval's tasks first (about a second), before lm-eval indexes its tasks."""
    key = tuple(cfg.task.tasks)
    if _PREFLIGHT.get("key") == key:
        return
    names, include, all_local = split_task_specs(cfg.task.tasks)
    hub_names = [n for n, spec in zip(names, cfg.task.tasks) if not str(spec).endswith((".yaml", ".yml"))]
    known = cached_task_names()
    if known is not None:
        check_task_names(hub_names, known)
    manager = task_manager(include, include_defaults=not all_local)
    if known is None and not all_local:
        if not include:
            store_task_names(manager.all_tasks)
        check_task_names(hub_names, manager.all_tasks)
    preload_tasks(names, manager)
    _PREFLIGHT.update(key=key, manager=manager)


def run(ctx) -> Dict[str, Any]:
    cfg, task = ctx.cfg, ctx.cfg.task
    names, include, all_local = split_task_specs(task.tasks)
    if _PREFLIGHT.get("key") != tuple(task.tasks):
        preflight(cfg)
    manager = _PREFLIGHT["manager"]
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
