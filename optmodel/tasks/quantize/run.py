"""task=quantize: ModelOpt post-training quantization of the run's model.

    data -> baseline -> calibrate -> checks -> after -> outputs

Reads calibration and held-out data, loads the model, measures held-out perplexity (and
task.evaluate accuracy), quantizes (`mtq.quantize` with a named format or recipe, or
`mtq.auto_quantize` for per-layer mixed precision), checks calibration coverage, measures
again on the in-memory fake-quant model, optionally checks greedy generations, then saves
the restorable quantized model and exports a deployable checkpoint into the run dir.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Dict, List, Optional

from optmodel.data.text import calibration_data, dataset_texts, pack
from optmodel.distributed import is_rank0
from optmodel.evaluation import evaluate_handle
from optmodel.evaluation.perplexity import handle_perplexity
from optmodel.quantization import calibrate as calibration
from optmodel.quantization import moe
from optmodel.quantization.checks import QuantizeError, check_calibrated, check_generations
from optmodel.quantization.summary import format_table, quantization_record

log = logging.getLogger("optmodel")

QUANTIZED_DIR = "quantized"


def run(ctx) -> Dict[str, Any]:
    cfg, task, data = ctx.cfg, ctx.cfg.task, ctx.cfg.data

    # data: problems surface before the model loads
    calib_records = dataset_texts(data, "calib")
    eval_records = dataset_texts(data, "eval") if task.perplexity else None
    handle = ctx.load_model()
    calib = calibration_data(handle.tokenizer, calib_records, data)
    metrics: Dict[str, Any] = calib.stats()
    log.info("calibration: %d sequences, %d tokens, %d pad tokens (%.1f%% useful, packing=%s)",
             calib.sequences, calib.tokens, calib.pad_tokens, 100 * calib.useful_ratio, data.packing)
    if calib.sequences < data.num_samples:
        log.warning("calibration data holds %d sequences, fewer than data.num_samples=%d", calib.sequences, data.num_samples)

    # baseline
    heldout = pack(handle.tokenizer, eval_records, data.seq_len, data.eval_max_sequences, "data.eval_path") if task.perplexity else None
    if heldout is not None:
        metrics["eval_tokens"] = heldout.numel()
        metrics["perplexity_before"] = handle_perplexity(handle, heldout, data.batch_size, "perplexity before")
        ctx.tracker.log({"perplexity_before": metrics["perplexity_before"]})
    metrics.update(evaluate_handle(handle, task.evaluate, "before", seed=cfg.run.seed))

    # calibrate
    start = time.perf_counter()
    with moe.count_expert_tokens(handle.model) as expert_tokens:
        result = calibration.quantize(handle, task, calib.batches, ctx.run_dir)
    metrics["calib_seconds"] = round(time.perf_counter() - start, 3)
    metrics["calib_tokens_per_second"] = round(calib.tokens / max(metrics["calib_seconds"], 1e-9), 1)

    # checks
    quantization = quantization_record(handle.model, task, result, expert_tokens, handle.quantizer_summary())
    metrics["effective_bits"] = quantization["effective_bits"]
    if "experts_without_calibration_tokens" in quantization:
        metrics["moe_experts_without_tokens"] = sum(len(v) for v in quantization["experts_without_calibration_tokens"].values())
    log.info("quantized %s:\n%s", quantization["format"], format_table(quantization))
    ctx.record(quantization=quantization)
    ctx.record_model(handle)
    check_calibrated(handle.model, result)
    if task.compress:
        metrics.update(calibration.compress(handle.model))

    # after: the in-memory fake-quant model
    if heldout is not None:
        metrics["perplexity_after"] = handle_perplexity(handle, heldout, data.batch_size, "perplexity after")
        metrics["perplexity_increase_pct"] = 100.0 * (metrics["perplexity_after"] / metrics["perplexity_before"] - 1)
    metrics.update(evaluate_handle(handle, task.evaluate, "after", seed=cfg.run.seed))
    ctx.log_metrics(metrics)
    if task.generate.prompts:
        generations = generation_check(handle, task.generate)
        ctx.write_file("generations", "generations.jsonl", "".join(json.dumps(g) + "\n" for g in generations))
        metrics["generation_matches"] = sum(1 for g in generations if g.get("matches"))
        ctx.record(metrics=metrics)
        check_generations(generations)

    # outputs
    export_dir = None
    if task.save_model:
        ctx.save_model(handle, name=QUANTIZED_DIR)
    if task.export:
        export_dir = ctx.export_model(handle, task.export_format, task.export_dtype)
    if is_rank0():
        print_summary(cfg, quantization["format"], metrics, export_dir)
    return metrics


def generation_check(handle, check) -> List[Dict[str, Any]]:
    """Greedy completions of `check.prompts`; each must start with its reference, if given."""
    completions = handle.generate(list(check.prompts), max_new_tokens=check.max_new_tokens, batch_size=1, desc=None)
    rows = []
    for i, (prompt, completion) in enumerate(zip(check.prompts, completions)):
        row = {"prompt": prompt, "completion": completion}
        if i < len(check.references):
            row["reference"] = check.references[i]
            row["matches"] = completion.strip().startswith(check.references[i].strip())
        rows.append(row)
    return rows


def print_summary(cfg, fmt: str, metrics: Dict[str, Any], export_dir: Optional[object]) -> None:
    kv = f" + KV cache {cfg.task.kv_cache}" if cfg.task.kv_cache != "none" else ""
    lines = [f"optmodel quantize: {cfg.model.name} -> {fmt}{kv} ({metrics['effective_bits']:.2f} effective weight bits)"]
    if "perplexity_before" in metrics:
        lines.append(
            f"  perplexity  {metrics['perplexity_before']:.3f} -> {metrics['perplexity_after']:.3f} "
            f"({metrics['perplexity_increase_pct']:+.2f}%) on {metrics['eval_tokens']} held-out tokens"
        )
    lines.append(
        f"  calibration {metrics['calib_sequences']} sequences, {metrics['calib_tokens']} tokens "
        f"({metrics['calib_pad_tokens']} pad) in {metrics['calib_seconds']:.1f} s"
    )
    if export_dir is not None:
        lines.append(f"  export      {export_dir}")
    print("\n".join(lines), flush=True)
