"""CPU fake-quant for the block-scaled formats (NVFP4, MXFP8, MXFP4) — small-model checks only.

ModelOpt 0.46 fake-quantizes dynamic block formats with CUDA kernels only ("amax must be a
CUDA tensor", the MX extension is skipped without CUDA). ModelOpt lets a quantizer name a
registered functional backend (`register_quant_backend` + the `backend` quantizer field);
this module registers one that quantizes and dequantizes with ModelOpt's own pure-torch
reference tensors (NVFP4QTensor, MXFP8QTensor, MXFP4QTensor: the code its exporter uses for
weights), so calibration, AWQ search, perplexity and export run on CPU. It is slow and meant
for tiny models; GPU runs never use it.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

BACKEND_NAME = "optmodel_cpu_block_fakequant"

E4M3_MAX = 448.0
E2M1_MAX = 6.0
# (element num_bits, scale_bits) of each supported dynamic block format.
NVFP4 = ((2, 1), (4, 3))
MXFP8 = ((4, 3), (8, 0))
MXFP4 = ((2, 1), (8, 0))
SUPPORTED = {NVFP4: "NVFP4", MXFP8: "MXFP8", MXFP4: "MXFP4"}


def _as_tuple(bits):
    return tuple(bits) if isinstance(bits, (list, tuple)) else bits


def block_format(cfg: Dict[str, Any]):
    """(num_bits, scale_bits) of a quantizer attribute dict with dynamic block scales, else None."""
    block = cfg.get("block_sizes") or {}
    if block.get("type") != "dynamic":
        return None
    return _as_tuple(cfg.get("num_bits")), _as_tuple(block.get("scale_bits"))


def _fake_quant_2d(x, num_bits, scale_bits, block: int, amax):
    import torch
    from modelopt.torch.quantization.qtensor import MXFP4QTensor, MXFP8QTensor, NVFP4QTensor

    if (num_bits, scale_bits) == NVFP4:
        # Per-tensor second-level scale from the calibrated amax, as the CUDA kernel does.
        scale_2 = (amax.float().amax() / (E2M1_MAX * E4M3_MAX)).clamp(min=torch.finfo(torch.float32).tiny)
        q, scale, double_scale = NVFP4QTensor.quantize(x, block, weights_scaling_factor_2=scale_2)
        return q.dequantize(dtype=torch.float32, scale=scale, double_scale=double_scale, block_sizes={-1: block})
    if (num_bits, scale_bits) == MXFP8:
        q, scale = MXFP8QTensor.quantize(x)
        return q.dequantize(dtype=torch.float32, scale=scale)
    q, scale = MXFP4QTensor.quantize(x, block)
    return q.dequantize(dtype=torch.float32, scale=scale, block_sizes={-1: block})


def block_fake_quant(inputs, quantizer):
    """The registered entrypoint: fake-quantize `inputs` the way `quantizer` is configured.

    Straight-through gradient (identity), so auto-quantize's gradient scoring and QAT work.
    """
    import torch

    num_bits = _as_tuple(quantizer.num_bits)
    scale_bits = _as_tuple(quantizer.block_sizes.get("scale_bits"))
    block = quantizer.block_sizes.get(-1) or quantizer.block_sizes.get(inputs.dim() - 1)
    amax = None
    if (num_bits, scale_bits) == NVFP4:
        amax = quantizer.amax if quantizer.amax is not None else inputs.detach().abs().amax()
    shape, dtype = inputs.shape, inputs.dtype
    x = inputs.detach().float().reshape(-1, shape[-1])
    with torch.no_grad():
        out = _fake_quant_2d(x, num_bits, scale_bits, block, amax).reshape(shape).to(dtype)
    return inputs + (out - inputs).detach()


def register() -> None:
    from modelopt.torch.quantization.nn import register_quant_backend
    from modelopt.torch.quantization.nn.modules.tensor_quantizer import is_registered_quant_backend

    if not is_registered_quant_backend(BACKEND_NAME):
        register_quant_backend(BACKEND_NAME, block_fake_quant)


def _route_cfg(cfg):
    """Copy of one entry's `cfg` (a dict, or a list for sequential quantizers) with block
    formats routed to the CPU backend; raises ValueError for block formats it cannot emulate."""
    if isinstance(cfg, list):
        return [_route_cfg(c) for c in cfg]
    fmt = block_format(cfg)
    if fmt is None:
        return cfg
    if fmt not in SUPPORTED:
        raise ValueError(
            f"num_bits={fmt[0]} with scale_bits={fmt[1]} has no CPU fake-quant path "
            f"(CPU covers {', '.join(SUPPORTED.values())})"
        )
    return {**cfg, "backend": BACKEND_NAME}


def route_to_cpu(mtq_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The ModelOpt config with every dynamic block quantizer using the CPU backend."""
    routed = copy.deepcopy(mtq_cfg)
    entries: List[Dict[str, Any]] = routed["quant_cfg"]
    for entry in entries:
        if "cfg" in entry and entry["cfg"] is not None:
            entry["cfg"] = _route_cfg(entry["cfg"])
    return routed


def for_device(mtq_cfg: Dict[str, Any], device) -> Dict[str, Any]:
    """`mtq_cfg` as it runs on `device` (a torch device): block formats through the CPU backend
    on a CPU, unchanged on a GPU."""
    if getattr(device, "type", str(device)) == "cpu" and needs_cpu_path(mtq_cfg):
        register()
        return route_to_cpu(mtq_cfg)
    return mtq_cfg


def needs_cpu_path(mtq_cfg: Dict[str, Any]) -> bool:
    def has_block(cfg):
        if isinstance(cfg, list):
            return any(has_block(c) for c in cfg)
        return isinstance(cfg, dict) and block_format(cfg) is not None

    return any(has_block(e.get("cfg")) for e in mtq_cfg["quant_cfg"])


def use_native_kernels(model) -> int:
    """Hand quantizers saved by a CPU run back to ModelOpt's CUDA kernels; returns how many."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    switched = 0
    for module in model.modules():
        if isinstance(module, TensorQuantizer) and module.backend == BACKEND_NAME:
            module.backend = None
            switched += 1
    return switched
