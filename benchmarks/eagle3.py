"""EAGLE3 draft training on a tiny target: training tokens per second and AL vs steps.

Converts the bundled tiny target with ModelOpt's EAGLE3, trains the draft online on the
bundled conversations through transformers' Trainer, measures acceptance length (greedy,
bundled MT-Bench-style prompts) before training and every --al-every steps, and prints
one row per measurement plus the training throughput.

    python benchmarks/eagle3.py [--model tiny_qwen3] [--steps 120] [--al-every 30] [--lr 3e-3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_qwen3")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--al-every", type=int, default=30)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--draft-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from hydra import compose, initialize_config_dir

    from optmodel.backends import load
    from optmodel.config.schema import register_schemas
    from optmodel.paths import conf_dir
    from optmodel.run import seed_everything
    from optmodel.speculative import workflow

    torch.set_num_threads(args.threads)
    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"model={args.model}", "task=eagle3", f"task.max_steps={args.steps}", f"task.al_every={args.al_every}",
            f"task.lr={args.lr}", f"task.seq_len={args.seq_len}", f"task.batch_size={args.batch_size}",
            f"task.save_steps={args.steps}", f"task.acceptance.num_prompts={args.prompts}",
            f"task.acceptance.max_new_tokens={args.max_new_tokens}", f"task.acceptance.draft_steps={args.draft_steps}"])
    seed_everything(0)
    handle = load(cfg)
    with tempfile.TemporaryDirectory() as run_dir:
        m = workflow.online(handle.model, handle.tokenizer, cfg.task, Path(run_dir), handle.device.type == "cpu", 0)
    print(f"\nEAGLE3 on {args.model}: {m['train_steps']} steps of {args.batch_size} x {args.seq_len} tokens, lr {args.lr}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"  training: {m['train_tokens_per_second']:.0f} tokens/s ({m['train_seconds']:.1f} s of training, "
          f"AL checks excluded)")
    print(f"  {'step':>6} {'AL':>7} {'AR':>7}  per-position acceptance ({args.draft_steps} draft steps)")
    for h in m["al_history"]:
        rates = " ".join(f"{r:.2f}" for r in h["per_position"])
        print(f"  {h['step']:>6} {h['acceptance_length']:7.3f} {h['acceptance_rate']:7.3f}  {rates}")


if __name__ == "__main__":
    main()
