"""Importance scoring cost of task=prune on backend=hf: wall time and peak memory (RSS, and
CUDA when on a GPU) of ModelOpt's importance hooks + layer scores over the calibration data.

    python benchmarks/prune.py [--model tiny_qwen3] [--samples 32] [--seq-len 256] [--batch-size 8] [--depth-batches 2]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_qwen3")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--depth-batches", type=int, default=2)
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir

    from optmodel.backends import load
    from optmodel.config.schema import register_schemas
    from optmodel.data.text import calibration_data, dataset_texts
    from optmodel.paths import conf_dir
    from optmodel.pruning.pruners import HFPruner

    register_schemas()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={args.model}", f"data.num_samples={args.samples}",
                                           f"data.seq_len={args.seq_len}", f"data.batch_size={args.batch_size}"])
    handle = load(cfg)
    calib = calibration_data(handle.tokenizer, dataset_texts(cfg.data, "calib"), cfg.data)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    HFPruner(handle, "skip_loss", args.depth_batches).score(calib.batches)
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.model}: {calib.sequences} sequences x {args.seq_len} tokens, batch {args.batch_size}, "
          f"{args.depth_batches} depth batches, device {handle.device}")
    print(f"scoring time  {seconds:.2f} s ({calib.tokens / seconds:.0f} tokens/s over the width pass + layer skips)")
    print(f"peak RSS      {rss:.0f} MiB (before scoring {rss_before:.0f} MiB)")
    if torch.cuda.is_available():
        print(f"peak CUDA     {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
