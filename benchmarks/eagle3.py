"""EAGLE3 draft training on the bundled target: AL vs steps per learning rate / dtype / schedule.

Each variant converts the bundled tiny target with ModelOpt's EAGLE3, trains the draft online
on the bundled conversations through the shared training stack (optmodel.speculative.workflow,
the task's own code: optmodel.training.loop.fit with task.training) and measures acceptance
length (greedy, bundled MT-Bench-style prompts) before training and every --al-every steps.
Everything not given is the task's default (`optmodel task=eagle3`), so `--lr` alone compares
learning rates at the default settings. Prints, and writes to --out (markdown), one AL-vs-steps
table over the variants plus each variant's wall time, CPU time (convert, training and AL
checks; the bundled target runs on one thread, so CPU seconds are about the wall time on idle
cores) and training throughput. Several `--steps` train one run per length (the schedule spans
each run; AL before and at the end only) and print AL against the run's length instead. The
variants run one after the other (one measurement at a time: wall times on shared cores are
noisy).

    python benchmarks/eagle3.py --lr 5e-5 1e-3 --dtype float32 bfloat16 --steps 1000 --al-every 200
    python benchmarks/eagle3.py --steps 200 1000 2000   # AL after runs of each length, default settings
    python benchmarks/eagle3.py                          # the task's defaults, one variant
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path


def run_variant(model: str, overrides, dtype: str, seed: int) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from optmodel.backends import load
    from optmodel.facts.paths import conf_dir
    from optmodel.run import seed_everything
    from optmodel.speculative import workflow

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model}", "task=eagle3", f"backend.dtype={dtype}", *overrides])
    seed_everything(seed)
    handle = load(cfg)
    start, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as run_dir:
        m = workflow.online(handle.model, handle.tokenizer, cfg.task, Path(run_dir), seed)
    m["wall_seconds"], m["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
    m["task"] = cfg.task
    m["dtype"] = str(next(p for p in handle.model.parameters() if not p.requires_grad).dtype).replace("torch.", "")
    del handle
    torch.manual_seed(seed)
    return m


def table(results) -> str:
    steps = sorted({h["step"] for r in results for h in r["al_history"]})
    head = ["steps"] + [r["label"] for r in results]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in steps:
        cells = [str(s)]
        for r in results:
            al = next((h["acceptance_length"] for h in r["al_history"] if h["step"] == s), None)
            cells.append(f"{al:.2f}" if al is not None else "")
        rows.append("| " + " | ".join(cells) + " |")
    rows.append("| wall s | " + " | ".join(f"{r['wall_seconds']:.0f}" for r in results) + " |")
    rows.append("| CPU s | " + " | ".join(f"{r['cpu_seconds']:.0f}" for r in results) + " |")
    rows.append("| train tok/s | " + " | ".join(f"{r['train_tokens_per_second']:.0f}" for r in results) + " |")
    return "\n".join(rows)


def length_table(results) -> str:
    """AL at the end of runs of each length (rows) per variant (columns), with their CPU seconds."""
    labels = list(dict.fromkeys(r["label"] for r in results))
    head = ["steps (run length)"] + [f"{label}: {what}" for label in labels for what in ("AL", "CPU s", "wall s")]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = {r["label"]: r for r in reversed(results)}
    rows.append("| " + " | ".join(["0"] + [c for label in labels for c in (f"{first[label]['al_before']:.2f}", "", "")]) + " |")
    for steps in sorted({r["steps"] for r in results}):
        cells = [str(steps)]
        for label in labels:
            r = next((r for r in results if r["steps"] == steps and r["label"] == label), None)
            cells += [f"{r['al_after']:.2f}", f"{r['cpu_seconds']:.0f}", f"{r['wall_seconds']:.0f}"] if r else ["", "", ""]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_qwen3")
    parser.add_argument("--lr", type=float, nargs="+", default=[None])
    parser.add_argument("--dtype", nargs="+", default=["auto"], help="backend.dtype per variant (the target's compute dtype)")
    parser.add_argument("--schedule", nargs="+", default=[None], help="task.training.lr_schedule per variant")
    parser.add_argument("--steps", type=int, nargs="+", default=[None],
                        help="task.training.max_steps (default: the task's); several: one run per length")
    parser.add_argument("--al-every", type=int, default=None, help="task.al_every (default: the task's)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--set", nargs="*", default=[], help="further task overrides, e.g. task.training.warmup_steps=20")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = parser.parse_args()

    import torch

    from optmodel.config.schema import register_schemas
    from optmodel.tasks.registry import task_specs

    if args.threads:
        torch.set_num_threads(args.threads)
    register_schemas(task_specs())
    common = list(args.set)
    lengths = len(args.steps) > 1
    if args.al_every is not None:
        common.append(f"task.al_every={args.al_every}")
    results = []
    for steps, lr, dtype, schedule in itertools.product(args.steps, args.lr, args.dtype, args.schedule):
        overrides = common + ([f"task.training.max_steps={steps}"] if steps is not None else []) + (
            [f"task.al_every={steps}"] if lengths else []) + (
            [f"task.training.lr={lr}"] if lr is not None else []) + (
            [f"task.training.lr_schedule={schedule}"] if schedule is not None else [])
        m = run_variant(args.model, overrides, dtype, args.seed)
        t = m["task"].training
        m["label"] = f"{m['dtype']}, lr {t.lr:g}" + (f", {schedule}" if schedule else "")
        m["steps"] = int(t.max_steps)
        print(f"{m['label']}, {m['steps']} steps: AL {m['al_before']} -> {m['al_after']} in {m['wall_seconds']:.0f} s "
              f"({m['cpu_seconds']:.0f} CPU s)", flush=True)
        results.append(m)
    t = results[0]["task"]
    header = (f"EAGLE3 on {args.model}: AL (bundled prompts, {t.acceptance.draft_steps} draft steps, "
              f"{t.acceptance.max_new_tokens} new tokens) vs steps of {t.training.global_batch_size} x {t.seq_len} tokens")
    text = header + "\n\n" + (length_table(results) if lengths else table(results)) + "\n"
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
