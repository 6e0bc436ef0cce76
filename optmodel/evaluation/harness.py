"""lm-eval's `simple_evaluate` on an optmodel LM, and its results as rows / a table."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from optmodel.facts.lm_eval_tasks import lm_eval_task_name

log = logging.getLogger("optmodel")


def split_task_specs(specs: Iterable[str]) -> Tuple[List[str], List[str], bool]:
    """lm-eval task names, the directories to index for local task YAML files (a spec that
    is a .yaml file stands for the task or group its `task:` / `group:` key names), and
    whether every spec was such a file (then lm-eval's built-in tasks need no indexing)."""
    names, include, all_local = [], [], True
    for spec in specs:
        path = Path(str(spec)).expanduser()
        names.append(lm_eval_task_name(spec))
        if path.suffix in (".yaml", ".yml") and path.is_file():
            include.append(str(path.resolve().parent))
        else:
            all_local = False
    return names, sorted(set(include)), all_local


def task_manager(include_paths=(), include_defaults: bool = True):
    """lm-eval's task index; indexing its thousands of built-in tasks takes seconds, so a
    run builds one and passes it on (`include_defaults=False` when every task is local)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_paths) or None, include_defaults=include_defaults)


def evaluate(lm, tasks: Sequence[Any], num_fewshot: Optional[int] = None, limit=None, include_paths=(),
             include_defaults: bool = True, seed: int = 1234, manager=None,
             apply_chat_template: bool = False) -> Dict[str, Any]:
    """`lm_eval.simple_evaluate` with the model in memory; `tasks` holds names or config dicts.
    `apply_chat_template`: prompts (few-shot examples as turns) go through the tokenizer's
    chat template, for instruct models."""
    import lm_eval

    if manager is None:
        manager = task_manager(include_paths, include_defaults)
    with _quiet_git_hash():
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=False,
            apply_chat_template=apply_chat_template,
            fewshot_as_multiturn=apply_chat_template,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    if results is None:
        raise RuntimeError("lm-eval returned no results (this process is not lm-eval's rank 0)")
    return results


@contextlib.contextmanager
def _quiet_git_hash():
    """lm-eval records the git commit of the working dir by running `git describe` with its
    stderr on the console: outside a checkout every evaluation printed `fatal: not a git
    repository`. The same lookup, with git's stderr kept off the console."""
    import subprocess

    import lm_eval.evaluator as evaluator
    from lm_eval.loggers.utils import get_commit_from_path

    def git_hash():
        try:
            done = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0:
            return done.stdout.strip()
        return get_commit_from_path(os.getcwd())

    original, evaluator.get_git_commit_hash = evaluator.get_git_commit_hash, git_hash
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


def _number(value):
    return value if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)) else None


def result_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per task (and group) and metric: task, metric, filter, value, stderr, samples."""
    rows = []
    samples = results.get("n-samples", {})
    for section in ("results", "groups"):
        for task, values in sorted(results.get(section, {}).items()):
            if section == "results" and task in results.get("groups", {}):
                continue  # a group's aggregate is listed once, from "groups"
            for key, value in values.items():
                if "," not in key or "_stderr" in key or _number(value) is None:
                    continue
                metric, filt = key.split(",", 1)
                stderr = values.get(f"{metric}_stderr,{filt}")
                rows.append({
                    "task": task, "metric": metric, "filter": filt, "value": float(value),
                    "stderr": _number(stderr), "samples": samples.get(task, {}).get("effective"),
                })
    return rows


def metrics_of(rows: List[Dict[str, Any]], suffix: str = "") -> Dict[str, float]:
    """Flat manifest metrics, e.g. {"hellaswag/acc_norm": 0.31}; the filter is named when not 'none'."""
    out = {}
    for row in rows:
        name = f"{row['task']}/{row['metric']}" + ("" if row["filter"] == "none" else f"[{row['filter']}]")
        out[name + suffix] = row["value"]
    return out


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| task | metric | filter | value | stderr | samples |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        stderr = "" if r["stderr"] is None else f"{r['stderr']:.4f}"
        lines.append(f"| {r['task']} | {r['metric']} | {r['filter']} | {r['value']:.4f} | {stderr} | {r['samples'] or ''} |")
    return "\n".join(lines) + "\n"
