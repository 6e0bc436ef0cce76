"""Training step time: `optmodel task=distill` vs a bare script running ModelOpt's KDTrainer.

Both distil the same teacher into the same student on the same packed windows of the bundled
corpus with the same Trainer settings (AdamW, cosine, clip 1.0, no eval, no checkpoints).
The bare side is what a user would write by hand: transformers + ModelOpt only, no optmodel
import in its training path. Step time is the mean wall time of an optimizer step, the first
(warm-up) step excluded, measured the same way on both sides. Prints both and the ratio.

    python benchmarks/distill.py [--steps 30] [--seq-len 128] [--batch-size 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def bare_kdtrainer(model_dir: Path, text_path: Path, steps: int, seq_len: int, batch: int, lr: float, seed: int,
                   out: Path) -> float:
    """Mean step seconds of a hand-written KDTrainer run."""
    import torch
    from modelopt.torch.distill.plugins.huggingface import KDTrainer
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, TrainingArguments

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = []
    for paragraph in text_path.read_text().split("\n\n"):
        if paragraph.strip():
            ids += tok(paragraph.strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = min(len(ids) // seq_len, steps * batch)
    windows = torch.tensor(ids[: n * seq_len]).view(n, seq_len)
    rows = [{"input_ids": w, "labels": w, "attention_mask": torch.ones_like(w)} for w in windows]
    teacher = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    student = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    times, begin = [], [0.0]

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            begin[0] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - begin[0])

    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch,
                             learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=2, adam_beta2=0.95,
                             max_grad_norm=1.0, seed=seed, data_seed=seed, report_to="none", save_strategy="no",
                             logging_steps=10, use_cpu=not torch.cuda.is_available(), remove_unused_columns=False)
    trainer = KDTrainer(model=student, args=args, train_dataset=rows, callbacks=[Timer()],
                        distill_args={"teacher_model": teacher, "temperature": 1.0})
    trainer.train()
    steady = times[1:]
    return sum(steady) / len(steady)


def optmodel_distill(steps: int, seq_len: int, batch: int, lr: float, seed: int, out: Path) -> float:
    from hydra import compose, initialize_config_dir

    from optmodel.config.schema import register_schemas
    from optmodel.tasks.registry import task_specs
    from optmodel.facts.paths import TINY_MODELS_DIR, conf_dir
    from optmodel.run import execute

    register_schemas(task_specs())
    overrides = ["task=distill", f"task.teacher={TINY_MODELS_DIR / 'tiny_qwen3'}", f"data.seq_len={seq_len}",
                 f"task.training.max_steps={steps}", f"task.training.micro_batch_size={batch}",
                 f"task.training.global_batch_size={batch}", f"task.training.lr={lr}", "task.training.warmup_steps=2",
                 f"task.training.max_train_sequences={steps * batch}", "task.perplexity=false", f"run.seed={seed}"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return execute(cfg, out)["train_step_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per side; the fastest counts")
    opts = parser.parse_args()

    import torch

    from optmodel.facts.paths import CORPUS_DIR, TINY_MODELS_DIR

    if opts.threads:
        torch.set_num_threads(opts.threads)
    ours_runs, bare_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(opts.repeats):  # alternating, so a load change on a shared machine hits both sides
            ours_runs.append(optmodel_distill(opts.steps, opts.seq_len, opts.batch_size, opts.lr, 1,
                                              Path(tmp) / f"optmodel{i}"))
            bare_runs.append(bare_kdtrainer(TINY_MODELS_DIR / "tiny_qwen3", CORPUS_DIR / "train.txt", opts.steps,
                                            opts.seq_len, opts.batch_size, opts.lr, 1, Path(tmp) / f"bare{i}"))
    ours, bare = min(ours_runs), min(bare_runs)
    print(f"tiny_qwen3 -> tiny_qwen3 KD, {opts.steps} steps of {opts.batch_size} x {opts.seq_len} tokens")
    print(f"  optmodel task=distill  {ours * 1000:8.1f} ms/step")
    print(f"  bare KDTrainer script  {bare * 1000:8.1f} ms/step")
    print(f"  runs (ms/step)         optmodel {[round(t * 1000, 1) for t in ours_runs]}, "
          f"bare {[round(t * 1000, 1) for t in bare_runs]}")
    print(f"  ratio                  {ours / bare:8.3f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
