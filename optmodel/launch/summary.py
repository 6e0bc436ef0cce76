"""The sweep summary: one row per job from its manifest (a pipeline: one row per step), as
CSV, Markdown and a PNG plot, for every task.

Each task's rows are sorted and plotted along what its sweeps vary (X_AXES): quantize by
effective bits, prune by parameters after, eagle3 by draft layers / TTT steps / draft
vocabulary, finetune / distill (QAT / QAD) by training steps; the plot's panels are the
accuracy it measured (held-out perplexity, MMLU and lm-eval accuracies, AL, the held-out
training / KD loss). Training jobs (finetune, distill, QAT / QAD, eagle3) also name their
student and teacher (eagle3: the draft and its target), and list tokens seen and KL to the
teacher before / after beside perplexity. Every metric any job recorded gets a column; a failed or gated job
shows its reason and the others are summarized all the same. `python -m
optmodel.launch.summary SWEEP_DIR` writes it for a sweep whose jobs were scheduled without
waiting. Comparing runs of different kinds: `optmodel compare`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from optmodel.facts.measures import short_path, trained_models
from optmodel.facts.rundir import MANIFEST_NAME, effective_status
from optmodel.launch.refresh import refresh
from optmodel.launch.sweep import read_record, read_record_file
from optmodel.launch.watch import metrics_line
from optmodel.manifest import atomic_write_text
from optmodel.tasks.registry import task_specs

SUMMARY_STEM = "summary"
# Columns first when present, in this order; any other metric follows alphabetically.
LEADING_METRICS = ("effective_bits", "parameters_after", "active_parameters_after", "draft_layers", "ttt_steps",
                   "draft_vocab_size", "train_steps", "train_tokens", "perplexity_before", "perplexity_after",
                   "perplexity_teacher", "kl_teacher_before", "kl_teacher_after", "perplexity_increase_pct",
                   "mmlu_before", "mmlu_after", "al_before", "al_after", "eval_loss", "eval_perplexity")
ACCURACY_MARKERS = ("mmlu", "accuracy", "acc")
SPECULATIVE_SETTINGS = ("draft_layers", "ttt_steps", "draft_vocab_size")
MODEL_COLUMNS = ("student", "teacher")  # shown when a training job is in the sweep


def _manifest(run_dir: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((run_dir / MANIFEST_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _jobs(sweep_dir: Path) -> List[Dict[str, Any]]:
    """The sweep record's jobs, or (sweeps launched elsewhere) every subdir with a manifest."""
    jobs = read_record(sweep_dir)
    if jobs is not None:
        return jobs
    found = sorted(p.parent for p in sweep_dir.glob(f"*/{MANIFEST_NAME}"))
    return [{"num": i, "overrides": [], "run_dir": str(d), "state": None, "error": None} for i, d in enumerate(found)]


def _varying(jobs: List[Dict[str, Any]]) -> List[set]:
    """Each job's overrides minus those every job shares: what the sweep varies."""
    sets = [set(o for o in j.get("overrides", []) if not o.startswith("hydra.")) for j in jobs]
    common = set.intersection(*sets) if len(sets) > 1 else set()
    return [s - common for s in sets]


def _numbers(metrics: Dict[str, Any]) -> Dict[str, float]:
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _job_rows(job: Dict[str, Any], varying: set) -> List[Dict[str, Any]]:
    """One row for a job; a pipeline's job: one row per step (its status, metrics, error)."""
    manifest = _manifest(Path(job["run_dir"])) or {}
    quant = manifest.get("quantization") or {}
    status = (effective_status(manifest) if manifest else None) or job.get("state") or "unknown"  # a killed run: interrupted
    if job.get("state") not in (None, "completed", "skipped", "submitted", "pending") and status not in ("completed", "gated"):
        status = job["state"]  # how the launcher saw it end: failed, not run, cancelled, ...
    metrics = _numbers(manifest.get("metrics"))
    speculative = manifest.get("speculative") or {}
    metrics.update({k: speculative[k] for k in SPECULATIVE_SETTINGS if isinstance(speculative.get(k), int)})
    student, teacher = trained_models(manifest, Path(job["run_dir"]))
    row = {
        "job": job["num"],
        "overrides": " ".join(o for o in job.get("overrides", []) if o in varying),
        "format": quant.get("format") or "",
        "status": status,
        "task": manifest.get("task") or "",
        "metrics": metrics,
        "student": student or "",
        "teacher": teacher or "",
        "error": (job.get("error") if status == "not run" else None) or manifest.get("error") or job.get("error") or "",
        "run_dir": job["run_dir"],
    }
    steps = manifest.get("steps")  # several tasks on one load: a row per step
    if not isinstance(steps, dict) or not steps:
        return [row]
    # a step that trained nothing (no train_steps) has no student or teacher
    return [{**row, "task": f"{row['task']}/{name}", "step": name, "status": step.get("status") or "pending",
             "metrics": _numbers(step.get("metrics")), "error": step.get("error") or "",
             **({} if "train_steps" in (step.get("metrics") or {}) else {"student": "", "teacher": ""})}
            for name, step in steps.items()]


def collect_rows(sweep_dir: Path) -> List[Dict[str, Any]]:
    rows = []
    jobs = _jobs(Path(sweep_dir))
    for job, varying in zip(jobs, _varying(jobs)):
        rows += _job_rows(job, varying)
    tasks = {r["task"] for r in rows}
    task = tasks.pop() if len(tasks) == 1 else None
    axes = sweep_axes(task) if task != "" else ("effective_bits",)  # "": manifests without a task
    x = next((k for k in axes if len({r["metrics"].get(k) for r in rows}) > 1), axes[0] if axes else None)
    if x is not None:  # pipelines (and mixed tasks) keep job and step order
        rows.sort(key=lambda r: (r["metrics"].get(x) is None, r["metrics"].get(x, 0), r["job"]))
    return rows


def metric_columns(rows: List[Dict[str, Any]]) -> List[str]:
    present = {k for r in rows for k in r["metrics"]}
    return [m for m in LEADING_METRICS if m in present] + sorted(present - set(LEADING_METRICS))


def sweep_axes(task: Optional[str]) -> tuple:
    """What a task's sweeps vary (its spec's sweep_axes), tried in order as the x axis; none for
    mixed tasks or pipeline steps."""
    specs = task_specs()
    return specs[task].sweep_axes if task in specs else ()


def model_columns(rows: List[Dict[str, Any]]) -> List[str]:
    return list(MODEL_COLUMNS) if any(r.get("student") or r.get("teacher") for r in rows) else []


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def to_csv(rows: List[Dict[str, Any]], metrics: List[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    models = model_columns(rows)
    writer.writerow(["job", "overrides", "format", "status", "task", *models, *metrics, "error", "run_dir"])
    for r in rows:
        writer.writerow([r["job"], r["overrides"], r["format"], r["status"], r["task"], *[r[c] for c in models],
                         *[r["metrics"].get(m, "") for m in metrics], r["error"], r["run_dir"]])
    return out.getvalue()


def to_markdown(rows: List[Dict[str, Any]], metrics: List[str]) -> str:
    models = model_columns(rows)
    head = ["job", "overrides", "format", "status", "task", *models, *metrics, "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["job"]), r["overrides"], r["format"], r["status"], r["task"],
                 *[short_path(r[c]) for c in models],  # the CSV has them whole
                 *[_fmt(r["metrics"].get(m)) for m in metrics],
                 r["error"].replace("|", "\\|").replace("\n", " ")[:300]]
        lines.append("| " + " | ".join(cells) + " |")
    jobs = {r["job"]: r for r in rows if not r.get("step")}
    done = sum(r["status"] == "completed" for r in jobs.values())
    lines.append("")
    lines.append(f"{done} of {len(jobs)} job(s) completed." if jobs or not rows else
                 f"{len({r['job'] for r in rows})} pipeline job(s), one row per step.")
    return "\n".join(lines) + "\n"


def _panels(done: List[Dict[str, Any]]) -> List[tuple]:
    """(metric, label) per accuracy the jobs measured, held-out perplexity first."""
    present = set(metric_columns(done))
    panels = [(m, label) for m, label in (("perplexity_after", "held-out perplexity (after)"),
                                          ("perplexity", "held-out perplexity"),
                                          ("eval_perplexity", "held-out perplexity (training eval)"))
              if m in present][:1] or [("perplexity_after", "held-out perplexity (after)")]
    panels += [(m, m.replace("_", " ")) for m in sorted(present)
               if (m.endswith("_after") and (m.startswith(ACCURACY_MARKERS) or "/" in m)) or m == "mmlu"]
    if "al_after" in present:
        panels.append(("al_after", "acceptance length (after)"))
    if "eval_loss" in present:
        kd = any(r.get("teacher") for r in done)
        panels.append(("eval_loss", "held-out KD loss (KL)" if kd else "held-out loss"))
    return panels


def _x_axis(done: List[Dict[str, Any]]) -> Optional[str]:
    """The task's axis that varies across the completed jobs (all of them record it)."""
    tasks = {r["task"] for r in done}
    axes = sweep_axes(tasks.pop() if len(tasks) == 1 else None)
    recorded = [k for k in axes if all(k in r["metrics"] for r in done)]
    return next((k for k in recorded if len({r["metrics"][k] for r in done}) > 1), recorded[0] if recorded else None)


def _label(r: Dict[str, Any]) -> str:
    if r.get("step"):
        return f"job {r['job']} {r['step']}"
    return r["format"] or r["overrides"] or f"job {r['job']}"


def plot(rows: List[Dict[str, Any]], path: Path) -> None:
    """Each accuracy the jobs measured against what the sweep varies for their task
    (X_AXES), one point per job; without such an axis (pipelines, mixed tasks), one
    labelled point per row in table order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "completed"]
    measured = [r for r in rows if r["status"] in ("completed", "gated")]  # gated: measured, over budget
    panels = _panels(measured)
    x_key = _x_axis(measured) if measured else None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels):
        points = [(r, r["metrics"][metric]) for r in measured
                  if metric in r["metrics"] and math.isfinite(r["metrics"][metric])]
        xs = [r["metrics"][x_key] if x_key else i for i, (r, _) in enumerate(points)]
        shown = [(x, y) for x, (r, y) in zip(xs, points) if r["status"] == "completed"]
        ax.plot([x for x, _ in shown], [y for _, y in shown], "o-" if x_key in ("train_steps",) else "o")
        gated = [(x, y) for x, (r, y) in zip(xs, points) if r["status"] == "gated"]
        if gated:
            ax.plot([x for x, _ in gated], [y for _, y in gated], "x", color="gray", markersize=8, label="gated (over budget)")
        for x, (r, y) in zip(xs, points):
            ax.annotate(_label(r), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8,
                        color="black" if r["status"] == "completed" else "gray")
        before = metric.replace("_after", "_before")
        refs = [r["metrics"][before] for r in measured if metric.endswith("_after") and before in r["metrics"]]
        if refs:
            ax.axhline(refs[0], linestyle="--", color="gray", label="before (the base)")
        if refs or gated:
            ax.legend(fontsize=8)
        if x_key:
            ax.set_xlabel(x_key.replace("_", " "))
        else:
            ax.set_xticks(xs, [_label(r) for r, _ in points], rotation=20, fontsize=7)
            ax.set_xlabel("job / step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    finished = len({r["job"] for r in rows})
    ok = len({r["job"] for r in done})
    fig.suptitle(f"sweep: {ok} of {finished} job(s) with completed results", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    tmp.replace(path)


def write_summary(sweep_dir: Path) -> List[Path]:
    """summary.csv, summary.md and summary.png in the sweep dir; returns their paths."""
    sweep_dir = Path(sweep_dir)
    rows = collect_rows(sweep_dir)
    metrics = metric_columns(rows)
    paths = [sweep_dir / f"{SUMMARY_STEM}.{ext}" for ext in ("csv", "md", "png")]
    atomic_write_text(paths[0], to_csv(rows, metrics))
    atomic_write_text(paths[1], to_markdown(rows, metrics))
    plot(rows, paths[2])
    return paths


def main(argv: List[str]) -> int:
    """Refresh the job states from Slurm, then: a sweep's summary files, or a plain run's state."""
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m optmodel.launch.summary SWEEP_DIR (or the run dir of a plain run)", file=sys.stderr)
        return 2
    where = Path(argv[0])
    jobs = refresh(where)
    record = read_record_file(where) or {}
    if record.get("plain"):  # one run: its state and metrics, no summary files in the run dir
        for job in jobs:
            print(f"slurm job {job.get('job_id')}: {job['state']}"
                  + (f": {job['error']}" if job.get("error") else "")
                  + (f"\n{metrics_line(job['run_dir'])}" if job["state"] == "completed" else ""))
        return 0 if all(j["state"] == "completed" for j in jobs) else 1
    for p in write_summary(where):
        print(p)
    print((where / f"{SUMMARY_STEM}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
