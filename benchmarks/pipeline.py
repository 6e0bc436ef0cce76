"""Wall time of `task=pipeline` (quantize -> mmlu -> export, one process, one model load)
against the same three steps as separate runs (quantize, then mmlu and export with run.load=),
each an `optmodel` process as a user would start it; prints both and their ratio.

    python benchmarks/pipeline.py [--model tiny_qwen3] [--quant-cfg FP8_DEFAULT_CFG] [--mmlu-dir tests/data/mmlu_sample]
                                  [--subjects astronomy,elementary_mathematics,high_school_geography] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parent.parent


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def optmodel(*overrides: str) -> Tuple[float, float]:
    """(wall, CPU) seconds of one `python -m optmodel <overrides>` (it must succeed). CPU time
    is the steadier figure on a shared machine."""
    start, cpu = time.perf_counter(), cpu_seconds()
    proc = subprocess.run([sys.executable, "-m", "optmodel", *overrides], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    seconds = (time.perf_counter() - start, cpu_seconds() - cpu)
    if proc.returncode != 0:
        sys.exit(f"optmodel {' '.join(overrides)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_qwen3")
    parser.add_argument("--quant-cfg", default="FP8_DEFAULT_CFG")
    parser.add_argument("--mmlu-dir", default=str(ROOT / "tests" / "data" / "mmlu_sample"))
    parser.add_argument("--subjects", default="astronomy,elementary_mathematics,high_school_geography")
    parser.add_argument("--repeats", type=int, default=1, help="each variant runs this often; the fastest counts")
    args = parser.parse_args()

    common = [f"model={args.model}"]
    quantize = [f"quant_cfg={args.quant_cfg}", "export=false"]  # the export is a step (a run) of its own
    mmlu = [f"data_dir={args.mmlu_dir}", f"subjects=[{args.subjects}]"]
    pipeline_times: List[Tuple[float, float]] = []
    separate_times: List[List[Tuple[float, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            run = Path(tmp) / f"r{r}"

            def pipeline_run():
                pipeline_times.append(optmodel(*common, "task=pipeline", "task.steps=[quantize,mmlu,export]",
                                               *(f"task.quantize.{o}" for o in quantize),
                                               *(f"task.mmlu.{o}" for o in mmlu), f"run.output_dir={run}/pipeline"))

            def separate_runs():
                separate_times.append([
                    optmodel(*common, "task=quantize", *(f"task.{o}" for o in quantize), f"run.output_dir={run}/quantize"),
                    optmodel("task=mmlu", *(f"task.{o}" for o in mmlu), f"run.load={run}/quantize",
                             f"run.output_dir={run}/mmlu"),
                    optmodel("task=export", f"run.load={run}/quantize", f"run.output_dir={run}/export")])

            # alternating which goes first evens out a machine whose load changes over time
            for variant in ((pipeline_run, separate_runs) if r % 2 == 0 else (separate_runs, pipeline_run)):
                variant()
    pipeline = min(pipeline_times)  # fastest wall (with its CPU time)
    separate = min(separate_times, key=lambda steps: sum(wall for wall, _ in steps))
    print(f"{args.model}, {args.quant_cfg}, MMLU {args.subjects} ({args.repeats} repeat(s), fastest shown)")
    print(f"{'':44s} {'wall s':>8s} {'CPU s':>8s}")
    print(f"{'pipeline (quantize -> mmlu -> export)':44s} {pipeline[0]:8.1f} {pipeline[1]:8.1f}")
    for name, (wall, cpu) in zip(("quantize", "mmlu (run.load=)", "export (run.load=)"), separate):
        print(f"{'  separate run: ' + name:44s} {wall:8.1f} {cpu:8.1f}")
    total = (sum(w for w, _ in separate), sum(c for _, c in separate))
    print(f"{'separate runs, total':44s} {total[0]:8.1f} {total[1]:8.1f}")
    print(f"{'ratio pipeline / separate':44s} {pipeline[0] / total[0]:7.2f}x {pipeline[1] / total[1]:7.2f}x")


if __name__ == "__main__":
    main()
