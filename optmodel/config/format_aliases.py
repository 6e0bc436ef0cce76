"""ModelOpt's `hf_ptq --qformat` short names, accepted wherever a `*_CFG` name is.

Source: QUANT_CFG_CHOICES in ModelOpt's examples/llm_ptq/hf_ptq.py (NVIDIA/Model-Optimizer,
commit 003e0fba; the example script is not part of the installed nvidia-modelopt package).
A run records the canonical name: `task.quant_cfg=nvfp4` runs, and its manifest says,
NVFP4_DEFAULT_CFG. tests/test_format_aliases.py checks every target is a format of the
pinned ModelOpt.
"""

from __future__ import annotations

from typing import Optional

from omegaconf import DictConfig, open_dict

QFORMAT_ALIASES = {
    "int8": "INT8_DEFAULT_CFG",
    "int8_sq": "INT8_SMOOTHQUANT_CFG",
    "int8_wo": "INT8_WEIGHT_ONLY_CFG",
    "fp8": "FP8_DEFAULT_CFG",
    "int4_awq": "INT4_AWQ_CFG",
    "w4a8_awq": "W4A8_AWQ_BETA_CFG",
    "nvfp4": "NVFP4_DEFAULT_CFG",
    "nvfp4_awq": "NVFP4_AWQ_LITE_CFG",
    "nvfp4_mse": "NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG",
    "fp8_pb_wo": "FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG",
    "fp8_pc_pt": "FP8_PER_CHANNEL_PER_TOKEN_CFG",
    "w4a8_nvfp4_fp8": "W4A8_NVFP4_FP8_CFG",
    "w4a8_mxfp4_fp8": "W4A8_MXFP4_FP8_CFG",
    "nvfp4_mlp_only": "NVFP4_MLP_ONLY_CFG",
    "nvfp4_experts_only": "NVFP4_EXPERTS_ONLY_CFG",
    "nvfp4_omlp_only": "NVFP4_OMLP_ONLY_CFG",
    "nvfp4_svdquant": "NVFP4_SVDQUANT_DEFAULT_CFG",
    "mxfp8": "MXFP8_DEFAULT_CFG",
    "nvfp4_local_hessian": "NVFP4_W4A4_WEIGHT_LOCAL_HESSIAN_CFG",
}


def canonical_format(name: Optional[str]) -> Optional[str]:
    """The `*_CFG` name of `name` (a short name, any case), or `name` unchanged."""
    if isinstance(name, str):
        return QFORMAT_ALIASES.get(name.lower(), name)
    return name


def resolve_format_aliases(cfg: DictConfig) -> DictConfig:
    """cfg with task.quant_cfg and task.auto_quantize.formats under their canonical names
    (cfg itself when nothing is an alias), so checks, the run and the manifest see one name."""
    task = cfg.get("task")
    if task is None:
        return cfg
    quant_cfg = task.get("quant_cfg")
    auto = task.get("auto_quantize")
    formats = list(auto.formats) if auto is not None and auto.get("formats") is not None else None
    new_quant = canonical_format(quant_cfg)
    new_formats = [canonical_format(f) for f in formats] if formats is not None else None
    if new_quant == quant_cfg and new_formats == formats:
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        if new_quant != quant_cfg:
            cfg.task.quant_cfg = new_quant
        if new_formats != formats:
            cfg.task.auto_quantize.formats = new_formats
    return cfg
