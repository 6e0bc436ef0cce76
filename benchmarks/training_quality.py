"""Training quality on the bundled teacher / student pair: one table of held-out perplexity and
KL to the teacher for

    base (the teacher, tiny_qwen3_teacher)     pruned (depth 8 -> 4, task=prune)
    pruned + finetune                          pruned + distill (the same steps, batch and tokens;
                                               the recipe's losses, and logits only)
    NVFP4 PTQ (task=quantize)                  + QAT (task=finetune)     + QAD (task=distill)

Every row is a real optmodel run (optmodel.run.execute on the composed config, as the CLI
runs it); QAT / QAD keep the task defaults apart from the step count given here. Each saved
model is then loaded by run.load and scored on the same held-out windows of the bundled corpus
(perplexity, and KL(teacher || model) per token against the teacher).

    python benchmarks/training_quality.py [--steps N] [--qat-steps 30] [--no-quant] [--threads 1] [--out DIR]

"recovered" is optmodel.training.recovery's share of the gap to the teacher (from the pruned
model for finetune / distill, from the PTQ model for QAT / QAD), printed where it is one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

TEACHER = "tiny_qwen3_teacher"
RECIPE = "tiny_qwen3_prune_distill"  # its prune target and distill settings are the rows' settings


def _value(v) -> str:
    return "[" + ",".join(_value(x) for x in v) + "]" if isinstance(v, list) else str(v)


def _flat(node: dict, prefix: str):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}={_value(value)}"


def recipe_settings():
    """(prune depth target, the recipe's task.distill settings as task.* overrides) from
    conf/experiment/<RECIPE>.yaml."""
    from omegaconf import OmegaConf

    from optmodel.facts.paths import conf_dir

    task = OmegaConf.to_container(OmegaConf.load(conf_dir() / "experiment" / f"{RECIPE}.yaml").task)
    return task["prune"]["export_config"]["num_layers"], list(_flat(task["distill"], "task"))


def compose(*overrides: str):
    from hydra import compose as hydra_compose, initialize_config_dir

    from optmodel.config.schema import register_schemas
    from optmodel.facts.paths import conf_dir
    from optmodel.tasks.registry import task_specs

    register_schemas(task_specs())
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=[f"model={TEACHER}", *overrides])


def run(out: Path, name: str, *overrides: str) -> Path:
    from optmodel.run import execute

    run_dir = out / name
    start = time.perf_counter()
    execute(compose(*overrides), run_dir)
    print(f"[{name}: {time.perf_counter() - start:.0f} s]", flush=True)
    return run_dir


def score(load: Path, teacher, heldout, batch_size: int):
    """(held-out perplexity, KL to the teacher) of the model a run saved, or of the teacher itself."""
    from optmodel.backends import load as load_handle
    from optmodel.evaluation.perplexity import handle_perplexity
    from optmodel.training.teacher_kl import handle_kl

    handle = teacher if load is None else load_handle(compose("task=eval", f"run.load={load}"))
    return handle_perplexity(handle, heldout, batch_size), handle_kl(handle, teacher, heldout, batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=0, help="finetune / distill steps; 0: the recipe's")
    parser.add_argument("--qat-steps", type=int, default=0, help="QAT / QAD steps; 0: the task default")
    parser.add_argument("--no-quant", action="store_true", help="the pruning rows only (no NVFP4 PTQ / QAT / QAD)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="keep the run dirs here (default: a temp dir)")
    opts = parser.parse_args()

    import torch

    from optmodel.backends import load as load_handle
    from optmodel.data.text import dataset_texts, pack
    from optmodel.training.recovery import recovered

    torch.set_num_threads(opts.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = opts.out or Path(tmp)
        layers, distill = recipe_settings()
        if opts.steps:
            distill = [o for o in distill if not o.startswith("task.training.max_steps=")]
            distill.append(f"task.training.max_steps={opts.steps}")
        pruned = run(out, "pruned", "task=prune", f"task.export_config.num_layers={layers}")
        training = [o for o in distill if o.startswith("task.training.")]
        finetuned = run(out, "finetune", "task=finetune", f"run.load={pruned}", *training)
        distilled = run(out, "distill", "task=distill", f"run.load={pruned}", *distill)
        logits_only = [o for o in distill if not o.startswith("task.distillation.intermediate_layer_pairs=")]
        logit_kd = run(out, "distill_logits", "task=distill", f"run.load={pruned}", *logits_only)
        # (label, run dir, the row its "recovered" share starts from)
        rows = [("base (teacher)", None, None), (f"pruned to {layers} layers", pruned, None),
                ("pruned + finetune", finetuned, 1), ("pruned + distill (recipe: logits + final hidden state)", distilled, 1),
                ("pruned + distill (logits only)", logit_kd, 1)]
        if not opts.no_quant:
            ptq = run(out, "ptq", "task=quantize", "task.quant_cfg=NVFP4_DEFAULT_CFG", "task.export=false")
            qat_steps = (f"task.training.max_steps={opts.qat_steps}",) if opts.qat_steps else ()
            qat = run(out, "qat", "task=finetune", f"run.load={ptq}", *qat_steps)
            qad = run(out, "qad", "task=distill", f"run.load={ptq}", *qat_steps)
            rows += [("NVFP4 PTQ", ptq, None), ("NVFP4 + QAT", qat, 5), ("NVFP4 + QAD", qad, 5)]

        cfg = compose("task=eval")
        teacher = load_handle(cfg)
        heldout = pack(teacher.tokenizer, dataset_texts(cfg.data, "eval"), cfg.data.seq_len,
                       cfg.data.eval_max_sequences, "data.eval_path")
        scores = [score(load, teacher, heldout, cfg.data.batch_size) for _, load, _ in rows]

    print(f"\n{TEACHER}, bundled held-out text: {heldout.numel()} tokens in {heldout.shape[0]} x {heldout.shape[1]} "
          f"windows. finetune / distill: experiment={RECIPE}'s settings ({' '.join(distill)}); "
          f"QAT / QAD: {'task defaults' if not opts.qat_steps else f'{opts.qat_steps} steps'}")
    print("| model | held-out perplexity | KL to the teacher (nats/token) |\n|---|---|---|")
    for (label, _, start), (ppl, kl) in zip(rows, scores):
        share = recovered(scores[start][0], ppl, scores[0][0])[0] if start is not None else None
        print(f"| {label} | {ppl:.3f}{f' ({share:.1%} recovered)' if share is not None else ''} | {kl:.4f} |")


if __name__ == "__main__":
    main()
