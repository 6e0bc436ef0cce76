"""Calibration throughput: packed sequences vs sorted batches vs pad-to-max-length.

Feeds the same calibration records (the bundled corpus's paragraphs) through a tiny model's
ModelOpt max calibration three ways and prints, per mode, the tokens the model processed,
how many were padding, the useful-token ratio and real (non-pad) tokens per second.

    python benchmarks/calibration.py [--model tiny_qwen3] [--samples 64] [--seq-len 512] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny_qwen3")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quant-cfg", default="FP8_DEFAULT_CFG")
    args = parser.parse_args()

    import modelopt.torch.quantization as mtq
    from hydra import compose, initialize_config_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optmodel.config.schema import register_schemas
    from optmodel.tasks.registry import task_specs
    from optmodel.data.text import calibration_data, dataset_texts
    from optmodel.facts.checkpoint import resolve_checkpoint
    from optmodel.facts.paths import conf_dir

    register_schemas(task_specs())
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={args.model}", f"data.num_samples={args.samples}",
                                           f"data.seq_len={args.seq_len}", f"data.batch_size={args.batch_size}"])
    ckpt = resolve_checkpoint(cfg.model)
    tok = AutoTokenizer.from_pretrained(ckpt)
    records = dataset_texts(cfg.data, "calib")
    base = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    torch.set_num_threads(torch.get_num_threads())

    print(f"{args.model}, {args.quant_cfg}, {args.samples} samples, seq_len {args.seq_len}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'mode':<6} {'rows':>5} {'real tokens':>12} {'pad tokens':>11} {'useful':>7} {'seconds':>8} {'real tok/s':>11}")
    for mode in ("pad", "sort", "pack"):
        data = calibration_data(tok, records, cfg.data, packing=mode)
        model = copy.deepcopy(base)

        def loop(m):
            with torch.no_grad():
                for batch in data.batches:
                    m(**batch)

        start = time.perf_counter()
        mtq.quantize(model, getattr(mtq, args.quant_cfg), loop)
        seconds = time.perf_counter() - start
        print(f"{mode:<6} {data.sequences:>5} {data.tokens:>12} {data.pad_tokens:>11} {data.useful_ratio:>7.1%} "
              f"{seconds:>8.2f} {data.tokens / seconds:>11.0f}")


if __name__ == "__main__":
    main()
