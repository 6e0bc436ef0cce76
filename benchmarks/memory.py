"""Memory, time and disk of the heavy steps on a real-size architecture: a random-weight
checkpoint with the published Qwen3-0.6B config.json numbers (benchmarks/data/
qwen3_0_6b_config.json: 28 layers, hidden 1024, vocab 151,936, tied embeddings, bf16) and the
bundled tiny tokenizer, then quantize FP8, convert HF -> Megatron and back, MMLU on the
bundled sample and prune, each as its own `optmodel` process. Per step: wall time, peak RSS,
peak RSS / model bytes (the input's bf16 weight bytes), bytes written / input bytes.

    python benchmarks/memory.py [--layers 28] [--samples 8] [--seq-len 256] [--workdir DIR] [--steps a,b]

`--layers` keeps the first N decoder layers of the architecture (a reduced variant for small
machines; the vocabulary-sized embedding, which dominates the logits, stays whole).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "data" / "qwen3_0_6b_config.json"
MMLU_SAMPLE = HERE.parent / "tests" / "data" / "mmlu_sample"
SAMPLE_SUBJECTS = "astronomy,elementary_mathematics,high_school_geography"  # the bundled sample's subjects
# Runs one optmodel CLI call and leaves its peak RSS (this process and its children) in a file.
STEP = """
import atexit, json, resource, runpy, sys
out = sys.argv.pop(1)
def report():
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    open(out, "w").write(json.dumps({"peak_rss_kib": peak}))
atexit.register(report)
runpy.run_module("optmodel.cli", run_name="__main__")
"""


def build_checkpoint(path: Path, layers: int) -> int:
    """Random-weight Qwen3 checkpoint in bf16, 300 MB shards like the published one; returns its weight bytes."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from optmodel.facts.paths import TINY_MODELS_DIR

    values = json.loads(CONFIG.read_text())
    values.update(num_hidden_layers=layers, max_window_layers=layers)
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODELS_DIR / "tiny_qwen3")
    values.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = AutoConfig.for_model(**values)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(path, max_shard_size="300MB")
    tokenizer.save_pretrained(path)
    return weight_bytes(path)


def weight_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def run_step(work: Path, name: str, overrides, output: str):
    run_dir = work / name
    rss_file = work / f"{name}.rss.json"
    cmd = [sys.executable, "-c", STEP, str(rss_file), f"run.output_dir={run_dir}", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"step {name} failed (exit {proc.returncode})")
    peak = json.loads(rss_file.read_text())["peak_rss_kib"] * 1024
    written = tree_bytes(run_dir / output) if output else None
    return seconds, peak, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--workdir", default=None, help="kept when given; a temporary dir otherwise")
    parser.add_argument("--steps", default=None, help="comma-separated subset of the steps (default: all)")
    args = parser.parse_args()

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="optmodel_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "checkpoint"
    if not ckpt.exists():
        build_checkpoint(ckpt, args.layers)
    input_bytes = weight_bytes(ckpt)
    model = [f"model=qwen3_0_6b", f"model.checkpoint={ckpt}", f"model.num_layers={args.layers}"]
    data = [f"data.num_samples={args.samples}", f"data.seq_len={args.seq_len}", f"data.eval_max_sequences={args.samples}"]
    steps = [
        ("quantize_fp8", [*model, *data, "task=quantize", "task.quant_cfg=FP8_DEFAULT_CFG", "task.export=false"],
         "quantized"),
        ("convert_hf_to_megatron", [*model, "backend=megatron", "task=convert"], "model"),
        ("convert_megatron_to_hf", [*model, "backend=megatron", "task=convert", "task.direction=megatron_to_hf",
                                    f"task.load={work / 'convert_hf_to_megatron'}"], "export"),
        ("mmlu", [*model, "task=mmlu", f"task.data_dir={MMLU_SAMPLE}", f"task.subjects=[{SAMPLE_SUBJECTS}]"], None),
        ("prune", [*model, *data, "task=prune", f"task.export_config.num_layers={max(1, args.layers - 1)}"], "model"),
    ]
    print(f"checkpoint: Qwen3-0.6B architecture, {args.layers} layers, {input_bytes / 1e9:.3f} GB bf16 weights "
          f"in {len(list(ckpt.glob('*.safetensors')))} shards; {args.samples} x {args.seq_len} tokens; "
          f"{os.cpu_count()} CPUs")
    print("| step | wall s | peak RSS GiB | peak RSS / model bytes | on disk / input |")
    print("| --- | --- | --- | --- | --- |")
    for name, overrides, output in steps:
        if args.steps and name not in args.steps.split(","):
            continue
        shutil.rmtree(work / name, ignore_errors=True)
        seconds, peak, written = run_step(work, name, overrides, output)
        disk = f"{written / input_bytes:.2f}x ({output}/)" if written is not None else "-"
        print(f"| {name} | {seconds:.1f} | {peak / 2**30:.2f} | {peak / input_bytes:.2f} | {disk} |", flush=True)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
