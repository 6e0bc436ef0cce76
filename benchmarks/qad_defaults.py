"""QAD / QAT settings on the bundled model: held-out perplexity against the NVFP4 PTQ it starts from.

One NVFP4 PTQ of tiny_qwen3 (`optmodel task=quantize task.quant_cfg=NVFP4_DEFAULT_CFG`), then
for each row `optmodel task=distill run.load=<that run>` (QAD: the teacher is the model before
quantization) or `task=finetune` (QAT) with the row's overrides, each through
optmodel.run.execute as the CLI runs it. A row reports the PTQ, teacher and trained held-out
perplexity, the share of the PTQ gap recovered ((PTQ - trained) / (PTQ - teacher)), the KL to
the teacher (QAD), and the CPU and wall seconds of the whole run (load, evaluations, training).
Rows are appended to a JSON file, so a long sweep can be run in parts on a shared machine;
the table printed covers every row in the file.

    OMP_NUM_THREADS=1 python benchmarks/qad_defaults.py [--rows qad_default,qat_default]
        [--results benchmarks/results/qad_defaults.json] [--work /tmp/qad_defaults]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

HERE = Path(__file__).parent

# name -> (task, overrides). The defaults rows are `task=distill` / `task=finetune` as shipped.
ROWS = {
    "qad_default": ("distill", []),
    "qad_lr1e-4_10": ("distill", ["task.training.max_steps=10"]),
    "qad_lr1e-5_10": ("distill", ["task.training.max_steps=10", "task.training.lr=1e-5"]),
    "qad_lr1e-4_30": ("distill", ["task.training.max_steps=30"]),
    "qad_lr1e-5_30": ("distill", ["task.training.max_steps=30", "task.training.lr=1e-5"]),
    "qad_lr1e-3_30": ("distill", ["task.training.max_steps=30", "task.training.lr=1e-3"]),
    "qad_lm_loss_kept_30": ("distill", ["task.training.max_steps=30", "task.distillation.skip_lm_loss=false"]),
    "qad_temperature2_30": ("distill", ["task.training.max_steps=30",
                                        "task.distillation.logit_kl_temperature=2.0"]),
    "qad_constant_30": ("distill", ["task.training.max_steps=30", "task.training.lr_schedule=constant"]),
    "qat_default": ("finetune", []),
    "qat_lr1e-4_30": ("finetune", ["task.training.max_steps=30"]),
    "qat_lr1e-5_30": ("finetune", ["task.training.max_steps=30", "task.training.lr=1e-5"]),
}


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from optmodel.config.schema import register_schemas
    from optmodel.facts.paths import conf_dir
    from optmodel.tasks.registry import task_specs

    register_schemas(task_specs())
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(cfg, run_dir: Path):
    from optmodel.run import execute

    cpu, wall = cpu_seconds(), time.perf_counter()
    metrics = execute(cfg, run_dir)
    return metrics, cpu_seconds() - cpu, time.perf_counter() - wall


def ptq_run(work: Path) -> Path:
    """The NVFP4 PTQ run every row starts from (made once per work dir)."""
    from optmodel.facts.rundir import read_manifest

    run_dir = work / "ptq"
    if not (run_dir.is_dir() and read_manifest(run_dir).get("status") == "completed"):
        timed(compose(["task=quantize", "task.quant_cfg=NVFP4_DEFAULT_CFG"]), run_dir)
    return run_dir


def measure(name: str, ptq: Path, work: Path) -> dict:
    task, overrides = ROWS[name]
    cfg = compose([f"task={task}", f"run.load={ptq}", "task.export=false", *overrides])
    metrics, cpu, wall = timed(cfg, work / name)
    base = metrics.get("perplexity_teacher")
    if base is None:  # QAT has no teacher: the gap is to the model PTQ started from
        from optmodel.facts.rundir import read_manifest

        base = read_manifest(ptq)["metrics"]["perplexity_before"]
    before, after = metrics["perplexity_before"], metrics["perplexity_after"]
    return {"row": name, "task": task, "overrides": overrides, "steps": metrics["train_steps"],
            "lr": float(cfg.task.training.lr), "tokens": metrics["train_tokens"], "ptq": before, "base": base,
            "trained": after, "recovered": round((before - after) / (before - base), 3),
            "kl_before": metrics.get("kl_teacher_before"), "kl_after": metrics.get("kl_teacher_after"),
            "cpu_s": round(cpu, 1), "wall_s": round(wall, 1)}


def table(rows) -> str:
    lines = ["| row | task | overrides | steps | PTQ ppl | base ppl | trained ppl | recovered | KL before -> after "
             "| CPU s | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kl = f"{r['kl_before']:.4f} -> {r['kl_after']:.4f}" if r.get("kl_after") is not None else "-"
        lines.append(f"| {r['row']} | {r['task']} | {' '.join(r['overrides']) or '(defaults)'} | {r['steps']} | "
                     f"{r['ptq']:.3f} | {r['base']:.3f} | {r['trained']:.3f} | {100 * r['recovered']:.0f}% | {kl} | "
                     f"{r['cpu_s']:.0f} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "qad_defaults.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/qad_defaults"))
    opts = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    opts.work.mkdir(parents=True, exist_ok=True)
    ptq = ptq_run(opts.work)
    done = json.loads(opts.results.read_text()) if opts.results.is_file() else []
    for name in [n for n in opts.rows.split(",") if n]:
        row = measure(name, ptq, opts.work)
        done = [r for r in done if r["row"] != name] + [row]
        opts.results.parent.mkdir(parents=True, exist_ok=True)
        opts.results.write_text(json.dumps(done, indent=1) + "\n")
        print(table([row]).splitlines()[-1], flush=True)
    print(table(done))


if __name__ == "__main__":
    main()
