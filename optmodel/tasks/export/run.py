"""task=export: a deployable checkpoint from the model of an earlier run.

    optmodel task=export run.load=outputs/quantize/tiny_qwen3/<time>             # unified HF
    optmodel task=export run.load=... task.format=vllm_fq task.dtype=float16      # vLLM fake-quant

The earlier run saved its model with the ModelOpt state (a quantize run's `quantized/`);
loading restores it, so formats, amax and pre-quant scales are exactly those calibrated there.
"""

from __future__ import annotations

from typing import Any, Dict

from optmodel.backends.megatron_checkpoint import preflight  # noqa: F401  (the registry calls it before the run)
from optmodel.distributed import is_rank0
from optmodel.quantization.checks import check_restored


def run(ctx) -> Dict[str, Any]:
    cfg, task = ctx.cfg, ctx.cfg.task
    handle = ctx.load_model()
    source = handle.origin or {}
    loaded_from = cfg.run.load or "the earlier pipeline steps"  # task=pipeline hands the model over in memory
    summary = handle.quantizer_summary()
    check_restored(summary, source.get("quantization"), loaded_from)
    ctx.record(quantization={**(source.get("quantization") or {}), **summary, "loaded_from": str(loaded_from)})
    ctx.record_model(handle)
    export_dir = ctx.export_model(handle, task.format, task.dtype)
    if is_rank0():
        print(f"optmodel export: {cfg.model.name} ({(source.get('quantization') or {}).get('format')}) from {loaded_from}\n"
              f"  {task.format} checkpoint ({task.dtype}) -> {export_dir}", flush=True)
    return {"effective_bits": summary["effective_bits"]}
