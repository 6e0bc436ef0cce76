"""`optmodel compare RUN_OR_SWEEP_DIR... [--out DIR] [--size model_bytes] [--wandb]`

Writes compare.csv, compare.md and compare.png into --out (default: the current dir) and
prints the Markdown table. Bad input (a dir that is neither a run dir nor a sweep dir, runs
that share no accuracy metric) is one message and exit status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from optmodel.compare import table
from optmodel.compare.plot import plot
from optmodel.facts.errors import ConfigError
from optmodel.manifest import atomic_write_text

STEM = "compare"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optmodel compare", description=(
        "Compare optmodel runs of any kind (run dirs, or -m sweep dirs): size against every accuracy metric they "
        "recorded, the base model as a reference row, Pareto-optimal runs marked."))
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run dirs and/or sweep dirs")
    p.add_argument("--out", default=".", help="where compare.csv / .md / .png go (default: the current dir)")
    p.add_argument("--size", default="model_bytes", choices=table.SIZE_COLUMNS,
                   help="the size axis of the plot and of the Pareto marks (default: model_bytes)")
    p.add_argument("--wandb", action="store_true",
                   help="also log the table and plot to Weights & Biases (project optmodel; WANDB_MODE, default offline)")
    return p


def main(argv: List[str]) -> int:
    args = parser().parse_args(argv)
    try:
        rows = table.collect(args.dirs)
        problems = table.common_metric_problems(rows)
        if problems:
            raise ConfigError(problems)
    except ConfigError as err:
        print("error: optmodel compare: " + " ".join(err.problems), file=sys.stderr)
        return 2
    metrics = table.metric_columns(rows)
    table.mark_pareto(rows, metrics, size=args.size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{STEM}.{ext}" for ext in ("csv", "md", "png")]
    atomic_write_text(paths[0], table.to_csv(rows, metrics))
    markdown = table.to_markdown(rows, metrics, size=args.size)
    atomic_write_text(paths[1], markdown)

    plot(rows, metrics, paths[2], size=args.size)
    if args.wandb:
        log_to_wandb(rows, metrics, paths, out)
    print(markdown, end="")
    print("\n".join(str(p) for p in paths))
    return 0


def log_to_wandb(rows, metrics, paths, out: Path, project: Optional[str] = None) -> None:
    """One wandb run holding the table (as wandb.Table) and the plot."""
    import csv

    import wandb

    lines = list(csv.reader(paths[0].open()))
    run = wandb.init(project=project or os.environ.get("WANDB_PROJECT", "optmodel"), job_type="compare",
                     mode=os.environ.get("WANDB_MODE", "offline"), dir=str(out), name="compare")
    run.log({"compare": wandb.Table(columns=lines[0], data=lines[1:]), "compare_plot": wandb.Image(str(paths[2]))})
    run.finish()
