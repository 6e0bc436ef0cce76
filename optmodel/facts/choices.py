"""Names a config may use, kept light so validation never imports torch or ModelOpt.

QUANT_FORMATS mirrors `modelopt.torch.quantization.config.choices` of the pinned ModelOpt;
tests/test_quantize.py asserts the two agree, so a ModelOpt upgrade that adds or drops a
format fails a test instead of drifting.
"""

QUANT_FORMATS = (
    "FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG",
    "FP8_AFFINE_KV_CFG",
    "FP8_DEFAULT_CFG",
    "FP8_KV_CFG",
    "FP8_PER_CHANNEL_PER_TOKEN_CFG",
    "INT4_AWQ_CFG",
    "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
    "INT8_DEFAULT_CFG",
    "INT8_SMOOTHQUANT_CFG",
    "INT8_WEIGHT_ONLY_CFG",
    "MAMBA_MOE_FP8_AGGRESSIVE_CFG",
    "MAMBA_MOE_FP8_CONSERVATIVE_CFG",
    "MAMBA_MOE_NVFP4_AGGRESSIVE_CFG",
    "MAMBA_MOE_NVFP4_CONSERVATIVE_CFG",
    "MXFP4_DEFAULT_CFG",
    "MXFP4_MLP_WEIGHT_ONLY_CFG",
    "MXFP6_DEFAULT_CFG",
    "MXFP8_DEFAULT_CFG",
    "MXINT8_DEFAULT_CFG",
    "NVFP4_AFFINE_KV_CFG",
    "NVFP4_AWQ_CLIP_CFG",
    "NVFP4_AWQ_FULL_CFG",
    "NVFP4_AWQ_LITE_CFG",
    "NVFP4_DEFAULT_CFG",
    "NVFP4_EXPERTS_ONLY_CFG",
    "NVFP4_FOUR_OVER_SIX_CFG",
    "NVFP4_FP8_MHA_CONFIG",
    "NVFP4_KV_CFG",
    "NVFP4_KV_ROTATE_CFG",
    "NVFP4_MLP_ONLY_CFG",
    "NVFP4_MLP_WEIGHT_ONLY_CFG",
    "NVFP4_OMLP_ONLY_CFG",
    "NVFP4_SVDQUANT_DEFAULT_CFG",
    "NVFP4_W4A4_WEIGHT_LOCAL_HESSIAN_CFG",
    "NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG",
    "W4A16_NVFP4_CFG",
    "W4A8_AWQ_BETA_CFG",
    "W4A8_MXFP4_FP8_CFG",
    "W4A8_NVFP4_FP8_CFG",
)

# Formats with no CPU path even through optmodel's CPU block fake-quant (which covers NVFP4,
# MXFP8, MXFP4): they need Triton / CUDA kernels or CUDA-only packages (measured on ModelOpt
# 0.46.1); refused up front on a CPU run instead of failing mid-calibration.
CUDA_ONLY_QUANT_FORMATS = (
    "MXFP6_DEFAULT_CFG",  # no pure-torch MXFP6 reference in ModelOpt
    "MXINT8_DEFAULT_CFG",  # no pure-torch MXINT8 reference in ModelOpt
    "NVFP4_FOUR_OVER_SIX_CFG",  # static NVFP4 blocks: Triton kernel
    "NVFP4_W4A4_WEIGHT_LOCAL_HESSIAN_CFG",
    "NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG",
    "NVFP4_FP8_MHA_CONFIG",  # FP8 attention: Triton attention kernel
    "NVFP4_KV_ROTATE_CFG",  # Hadamard rotation: fast_hadamard_transform (CUDA)
)

# KV-cache-only configs: not a model format by themselves (task.kv_cache selects them).
KV_ONLY_QUANT_FORMATS = ("FP8_KV_CFG", "FP8_AFFINE_KV_CFG", "NVFP4_KV_CFG", "NVFP4_AFFINE_KV_CFG", "NVFP4_KV_ROTATE_CFG")

# Formats that quantize only MoE experts: nothing to do on a dense model.
MOE_ONLY_QUANT_FORMATS = ("NVFP4_EXPERTS_ONLY_CFG",)

EXPORT_FORMATS = ("hf", "vllm_fq")
AUTO_QUANTIZE_METHODS = ("gradient", "kl_div")

# task.kv_cache -> the ModelOpt KV-cache config appended to the weight/activation config.
KV_CACHE_FORMATS = {
    "none": None,
    "fp8": "FP8_KV_CFG",
    "fp8_affine": "FP8_AFFINE_KV_CFG",
    "nvfp4": "NVFP4_KV_CFG",
    "nvfp4_affine": "NVFP4_AFFINE_KV_CFG",
    "nvfp4_rotate": "NVFP4_KV_ROTATE_CFG",
}

BACKENDS = ("hf", "megatron")
TOKEN_DISPATCHERS = ("allgather", "alltoall")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
DATA_SOURCES = ("bundled", "text", "jsonl", "hf")
PACKING_MODES = ("pack", "sort", "pad")
LOGGERS = ("none", "wandb")
WANDB_MODES = ("online", "offline", "disabled")
ROUTER_SCORE_FUNCTIONS = ("softmax", "sigmoid")
CONVERT_DIRECTIONS = ("hf_to_megatron", "megatron_to_hf")
# Families optmodel's megatron builder reproduces (backends/megatron_spec.py, megatron_families.py).
MEGATRON_FAMILIES = ("llama", "qwen2", "qwen3", "qwen3_moe", "llama4", "deepseek_v2", "deepseek_v3", "gpt_oss")
