"""task=prune cost on one tiny model: wall time and peak RSS of `optmodel task=prune` on
backend=hf and on backend=megatron (ModelOpt's mcore_minitron), and of a bare script making
backend=hf's library calls (transformers load, ModelOpt's importance hooks over the same
calibration batches, the slicing, save_pretrained) with none of optmodel around them.

    python benchmarks/prune.py [--model tiny_qwen3] [--target num_layers=3,ffn_hidden_size=192]
                               [--samples 32] [--seq-len 256] [--batch-size 8] [--depth-importance cosine]
                               [--runs hf,megatron,bare]

Each run is its own process (imports included, as a user sees it); peak RSS is that
process's own (os.wait4). Held-out perplexity is off in the optmodel runs: the bare script
measures none either.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def bare(model: str, target: dict, samples: int, seq_len: int, batch_size: int, out: str) -> None:
    """backend=hf's library calls, nothing else: the same calibration windows, depth by cosine."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optmodel.data.text import pack
    from optmodel.facts.records import read_records
    from optmodel.facts.paths import CORPUS_DIR, TINY_MODELS_DIR
    from optmodel.pruning import apply, importance

    path = TINY_MODELS_DIR / model
    tok = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    windows = pack(tok, read_records(CORPUS_DIR / "train.txt", "calib"), seq_len, samples, "calib")
    batches = [{"input_ids": windows[s:s + batch_size]} for s in range(0, len(windows), batch_size)]
    scores = importance.score(hf, batches, torch.device("cpu"))["scores"]
    apply.prune(hf, scores, target)
    hf.save_pretrained(out)
    tok.save_pretrained(out)


def measure(cmd) -> tuple:
    """(wall seconds, CPU seconds, peak RSS MiB) of one child process (CPU time: user + system,
    the steadier figure on a loaded machine)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.stderr.write(output[-6000:])
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_qwen3")
    parser.add_argument("--target", default="num_layers=3,ffn_hidden_size=192", help="export_config as k=v,...")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--depth-importance", default="cosine", help="backend=hf's depth measure (megatron: cosine)")
    parser.add_argument("--runs", default="bare,hf,megatron")
    parser.add_argument("--bare-out", default=None, help=argparse.SUPPRESS)  # child mode: run `bare` there
    args = parser.parse_args()
    target = {k: int(v) for k, v in (item.split("=") for item in args.target.split(","))}
    if args.bare_out:
        bare(args.model, target, args.samples, args.seq_len, args.batch_size, args.bare_out)
        return

    work = Path(tempfile.mkdtemp(prefix="optmodel_prune_bench_"))
    common = [f"model={args.model}", "task=prune", "task.perplexity=false", f"data.num_samples={args.samples}",
              f"data.seq_len={args.seq_len}", f"data.batch_size={args.batch_size}",
              *(f"task.export_config.{k}={v}" for k, v in target.items())]
    commands = {
        "bare": [sys.executable, __file__, f"--model={args.model}", f"--target={args.target}", f"--samples={args.samples}",
                 f"--seq-len={args.seq_len}", f"--batch-size={args.batch_size}", f"--bare-out={work / 'bare'}"],
        "hf": [sys.executable, "-m", "optmodel", *common, "backend=hf", f"task.depth_importance={args.depth_importance}",
               f"run.output_dir={work / 'hf'}"],
        "megatron": [sys.executable, "-m", "optmodel", *common, "backend=megatron", "backend.device=cpu",
                     f"run.output_dir={work / 'megatron'}"],
    }
    results = {name: measure(commands[name]) for name in args.runs.split(",")}
    print(f"{args.model} -> {args.target}: {args.samples} x {args.seq_len} calibration tokens, batch {args.batch_size}, "
          f"hf depth {args.depth_importance}; one process each, imports included")
    print(f"{'run':10} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13} {'vs hf (wall / CPU / RSS)':>26}")
    hf = results.get("hf")
    for name, (seconds, cpu, rss) in results.items():
        ratio = f"{seconds / hf[0]:.2f}x / {cpu / hf[1]:.2f}x / {rss / hf[2]:.2f}x" if hf else ""
        print(f"{name:10} {seconds:8.1f} {cpu:8.1f} {rss:13.0f} {ratio:>26}")


if __name__ == "__main__":
    main()
