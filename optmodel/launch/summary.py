"""The sweep summary: one row per job from its manifest, as CSV, Markdown and a PNG plot.

Rows are sorted by effective bits (jobs that record none come last, still listed); every
metric any job recorded gets a column; a failed job shows its error and the others are
summarized all the same. `python -m optmodel.launch.summary SWEEP_DIR` writes it for a
sweep whose jobs were scheduled without waiting.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from optmodel.claim import effective_status
from optmodel.launch.sweep import read_record
from optmodel.manifest import MANIFEST_NAME, atomic_write_text

SUMMARY_STEM = "summary"
# Columns first when present, in this order; any other metric follows alphabetically.
LEADING_METRICS = ("effective_bits", "perplexity_before", "perplexity_after", "perplexity_increase_pct",
                   "mmlu_before", "mmlu_after")
ACCURACY_MARKERS = ("mmlu", "accuracy", "acc")


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


def collect_rows(sweep_dir: Path) -> List[Dict[str, Any]]:
    rows = []
    jobs = _jobs(Path(sweep_dir))
    for job, varying in zip(jobs, _varying(jobs)):
        manifest = _manifest(Path(job["run_dir"])) or {}
        quant = manifest.get("quantization") or {}
        status = (effective_status(manifest) if manifest else None) or job.get("state") or "unknown"  # a killed run: interrupted
        if job.get("state") not in (None, "completed", "skipped", "submitted", "pending") and status not in ("completed", "gated"):
            status = job["state"]  # how the launcher saw it end: failed, not run, cancelled, ...
        rows.append({
            "job": job["num"],
            "overrides": " ".join(o for o in job.get("overrides", []) if o in varying),
            "format": quant.get("format") or "",
            "status": status,
            "metrics": {k: v for k, v in (manifest.get("metrics") or {}).items() if isinstance(v, (int, float))},
            "error": (job.get("error") if status == "not run" else None) or manifest.get("error") or job.get("error") or "",
            "run_dir": job["run_dir"],
        })
    rows.sort(key=lambda r: (r["metrics"].get("effective_bits") is None, r["metrics"].get("effective_bits", 0), r["job"]))
    return rows


def metric_columns(rows: List[Dict[str, Any]]) -> List[str]:
    present = {k for r in rows for k in r["metrics"]}
    return [m for m in LEADING_METRICS if m in present] + sorted(present - set(LEADING_METRICS))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def to_csv(rows: List[Dict[str, Any]], metrics: List[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["job", "overrides", "format", "status", *metrics, "error", "run_dir"])
    for r in rows:
        writer.writerow([r["job"], r["overrides"], r["format"], r["status"],
                         *[r["metrics"].get(m, "") for m in metrics], r["error"], r["run_dir"]])
    return out.getvalue()


def to_markdown(rows: List[Dict[str, Any]], metrics: List[str]) -> str:
    head = ["job", "overrides", "format", "status", *metrics, "error"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["job"]), r["overrides"], r["format"], r["status"], *[_fmt(r["metrics"].get(m)) for m in metrics],
                 r["error"].replace("|", "\\|").replace("\n", " ")[:300]]
        lines.append("| " + " | ".join(cells) + " |")
    done = sum(r["status"] == "completed" for r in rows)
    lines.append("")
    lines.append(f"{done} of {len(rows)} job(s) completed.")
    return "\n".join(lines) + "\n"


def plot(rows: List[Dict[str, Any]], path: Path) -> None:
    """Perplexity (and accuracy, when recorded) against effective bits, one point per job.
    Jobs without effective_bits are placed by format name instead, on a labelled axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "completed"]
    panels = [("perplexity_after", "held-out perplexity (after)")]
    accuracy = [m for m in metric_columns(done) if m.endswith("_after") and m.startswith(ACCURACY_MARKERS)]
    panels += [(m, m.replace("_", " ")) for m in accuracy]
    by_bits = all("effective_bits" in r["metrics"] for r in done) and done
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels):
        points = [(r, r["metrics"][metric]) for r in done if metric in r["metrics"] and math.isfinite(r["metrics"][metric])]
        xs = [r["metrics"]["effective_bits"] if by_bits else i for i, (r, _) in enumerate(points)]
        ax.plot(xs, [y for _, y in points], "o")
        for x, (r, y) in zip(xs, points):
            ax.annotate(r["format"] or f"job {r['job']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        before = metric.replace("_after", "_before")
        refs = [r["metrics"][before] for r in done if before in r["metrics"]]
        if refs:
            ax.axhline(sum(refs) / len(refs), linestyle="--", color="gray", label="before quantization")
            ax.legend(fontsize=8)
        if by_bits:
            ax.set_xlabel("effective bits")
        else:
            ax.set_xticks(xs, [r["format"] or f"job {r['job']}" for r, _ in points], rotation=20, fontsize=7)
            ax.set_xlabel("format (no effective_bits recorded)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    failed = len(rows) - len(done)
    fig.suptitle(f"sweep: {len(done)} completed" + (f", {failed} not completed" if failed else ""), fontsize=10)
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
    from optmodel.launch.refresh import refresh
    from optmodel.launch.sweep import read_record_file
    from optmodel.launch.watch import metrics_line

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
