"""Which exported formats each serving engine's ModelOpt loader accepts (`task.deploy`).

A unified HF export records its format as `quant_algo` (and `kv_cache_quant_algo`) in
hf_quant_config.json; an engine reads those names and refuses the ones it has no kernels
for. Checking them at validation tells the user before the GPU hours are spent.

Sources (README "Deploy targets" has the table):
- quant_algo per ModelOpt config: modelopt/torch/export/quant_utils.py of ModelOpt 0.46.1
  (the per-layer quant_algo names; more than one format in a model: MIXED_PRECISION).
- vLLM 0.32: its ModelOpt loader's refusal, measured on the CPU build (shared STACK_NOTES);
  KV cache: KV_CACHE_QUANT_ALGOS = ['FP8'] (vllm.model_executor.layers.quantization.modelopt,
  API docs v0.16 - v0.19).
- SGLang: python/sglang/srt/layers/quantization/modelopt_quant.py (sgl-project/sglang,
  mid-2025, commit 003ca3e): ModelOptFp8Config (static FP8) and ModelOptFp4Config (NVFP4),
  FP8 KV cache.
- TensorRT-LLM 1.0 (PyTorch backend, docs features/quantization): FP8 per tensor, FP8
  rowwise, NVFP4, W4A16 AWQ, W4A8 AWQ, FP8 KV cache; NVFP4 KV cache from the 1.3 docs.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

DEPLOY_TARGETS = ("none", "vllm", "sglang", "trtllm", "any")

# ModelOpt config -> the quant_algo its unified HF export writes (ModelOpt 0.46.1).
# Formats that quantize part of the model (MLP only, experts only) write the same name with
# the rest under exclude_modules.
QUANT_ALGO = {
    "FP8_DEFAULT_CFG": "FP8",
    "FP8_PER_CHANNEL_PER_TOKEN_CFG": "FP8_PER_CHANNEL_PER_TOKEN",
    "FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG": "FP8_PB_WO",
    "INT4_AWQ_CFG": "W4A16_AWQ",
    "W4A8_AWQ_BETA_CFG": "W4A8_AWQ",
    "INT8_SMOOTHQUANT_CFG": "W8A8_SQ_PER_CHANNEL",
    "INT8_WEIGHT_ONLY_CFG": "W8A16",
    "NVFP4_DEFAULT_CFG": "NVFP4",
    "NVFP4_MLP_ONLY_CFG": "NVFP4",
    "NVFP4_OMLP_ONLY_CFG": "NVFP4",
    "NVFP4_EXPERTS_ONLY_CFG": "NVFP4",
    "NVFP4_AWQ_LITE_CFG": "NVFP4_AWQ",
    "NVFP4_AWQ_CLIP_CFG": "NVFP4_AWQ",
    "NVFP4_AWQ_FULL_CFG": "NVFP4_AWQ",
    "NVFP4_SVDQUANT_DEFAULT_CFG": "NVFP4_SVD",
    "W4A16_NVFP4_CFG": "W4A16_NVFP4",
    "NVFP4_MLP_WEIGHT_ONLY_CFG": "W4A16_NVFP4",
    "MXFP8_DEFAULT_CFG": "MXFP8",
    "W4A8_NVFP4_FP8_CFG": "W4A8_NVFP4_FP8",
    "W4A8_MXFP4_FP8_CFG": "W4A8_MXFP4_FP8",
}
# task.weight_only=true turns these into their weight-only export.
WEIGHT_ONLY_QUANT_ALGO = {"NVFP4_DEFAULT_CFG": "W4A16_NVFP4", "INT8_SMOOTHQUANT_CFG": "W8A16",
                          "INT8_WEIGHT_ONLY_CFG": "W8A16", "INT4_AWQ_CFG": "W4A16_AWQ"}
# task.kv_cache -> kv_cache_quant_algo
KV_ALGO = {"none": None, "fp8": "FP8", "fp8_affine": "FP8_AFFINE", "nvfp4": "NVFP4", "nvfp4_affine": "NVFP4_AFFINE",
           "nvfp4_rotate": "NVFP4"}

ENGINES: Dict[str, Tuple[str, Tuple[str, ...], Tuple[str, ...]]] = {
    # name: (label with version, quant_algo accepted, kv_cache_quant_algo accepted)
    "vllm": ("vLLM 0.32", ("FP8", "FP8_PER_CHANNEL_PER_TOKEN", "FP8_PB_WO", "NVFP4", "W4A16_NVFP4", "MXFP8",
                           "MIXED_PRECISION"), ("FP8",)),
    "sglang": ("SGLang (modelopt_quant.py, mid-2025)", ("FP8", "NVFP4"), ("FP8",)),
    "trtllm": ("TensorRT-LLM 1.0+ (PyTorch backend)", ("FP8", "FP8_PER_CHANNEL_PER_TOKEN", "NVFP4", "W4A16_AWQ",
                                                        "W4A8_AWQ"), ("FP8", "NVFP4")),
}

# CFG name -> short name for the refusal (what the user can type instead)
_CFG_OF_ALGO: Dict[str, List[str]] = {}
for _cfg, _algo in QUANT_ALGO.items():
    _CFG_OF_ALGO.setdefault(_algo, []).append(_cfg)


def quant_algo(fmt: str, weight_only: bool = False) -> Optional[str]:
    """The quant_algo the export of ModelOpt config `fmt` records; None: not known."""
    if weight_only:
        return WEIGHT_ONLY_QUANT_ALGO.get(fmt)
    return QUANT_ALGO.get(fmt)


def engines_of(target: str) -> List[str]:
    return list(ENGINES) if target == "any" else [target]


def accepted_formats(engine: str) -> str:
    label, algos, kv = ENGINES[engine]
    cfgs = [c for a in algos for c in _CFG_OF_ALGO.get(a, [])]
    return (f"{label} loads quant_algo {', '.join(algos)} (optmodel formats: {', '.join(cfgs) or 'none'}"
            f"{', auto_quantize' if 'MIXED_PRECISION' in algos else ''}) with KV cache "
            f"{' or '.join(['none'] + [k for k, v in KV_ALGO.items() if v in kv and k != 'none'])}")


def deploy_problems(field: str, target: str, formats: List[str], kv_cache: str, weight_only: bool = False,
                    mixed: bool = False, export_format: str = "hf") -> List[str]:
    """Problems of exporting `formats` (one, or auto-quantize's candidates when `mixed`) with
    `kv_cache` for serving on `target`. Empty for target none."""
    if target == "none":
        return []
    if target not in DEPLOY_TARGETS:
        return [f"task.deploy: unknown value {target!r}. Valid: {', '.join(DEPLOY_TARGETS)}."]
    if export_format == "vllm_fq":  # bf16 weights + amax: ModelOpt's fake-quant plugin for vLLM, no engine kernels
        return [f"task.deploy: {target}: the vllm_fq export holds bf16 weights (weight quantization folded "
                f"in) plus the quantizers' amax for ModelOpt's vLLM fake-quant plugin (examples/vllm_serve); a plain "
                f"engine load ignores the amax and serves it as an unquantized bf16 model. Fix: the hf export "
                f"format (a checkpoint the engine serves with its quantized kernels), or task.deploy=none to keep "
                f"the fake-quant export for that plugin."]
    problems = []
    for engine in engines_of(target):
        label, algos, kv_algos = ENGINES[engine]
        why = []
        for fmt in formats:
            algo = quant_algo(fmt, weight_only)
            if algo is None:
                why.append(f"optmodel does not know the quant_algo ModelOpt 0.46 exports for {fmt}"
                           f"{' with task.weight_only=true' if weight_only else ''}")
            elif algo not in algos:
                why.append(f"{fmt} exports quant_algo {algo}, which it does not load")
        if mixed and len(formats) != 1 and "MIXED_PRECISION" not in algos:
            why.append("auto_quantize exports MIXED_PRECISION (a format per layer), which it does not load")
        kv = KV_ALGO.get(kv_cache)
        if kv is not None and kv not in kv_algos:
            why.append(f"task.kv_cache={kv_cache} exports kv_cache_quant_algo {kv}, which it does not load")
        if why:
            problems.append(f"{field}: task.deploy={target}: {label} cannot serve this export: {'; '.join(why)}. "
                            f"{accepted_formats(engine)}. Fix: one of those formats, or task.deploy=none.")
    return problems
