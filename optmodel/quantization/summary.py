"""What a quantized model holds: per-layer formats, quantizer counts, effective weight bits."""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Dict, Iterator, Tuple

from optmodel.quantization import formats, moe
from optmodel.quantization.cpu_fakequant import BACKEND_NAME

def _bits(quantizer) -> float:
    """Stored bits per weight element, scale overhead included when ModelOpt knows it
    (the `effective_bits` of a format, e.g. NVFP4 4.5); 16 when the quantizer is off."""
    from modelopt.torch.quantization.nn import SequentialQuantizer

    if isinstance(quantizer, SequentialQuantizer):  # e.g. W4A8 AWQ: int4 stored, then fp8
        return min(_bits(q) for q in quantizer)
    if not quantizer.is_enabled:
        return 16.0
    effective = getattr(quantizer, "_effective_bits", None)
    if effective is not None:
        return float(effective)
    bits = quantizer.num_bits
    return float(sum(bits) + 1) if isinstance(bits, tuple) else float(bits)


def weight_quantizers(model) -> Iterator[Tuple[str, Any, int]]:
    """(module name, weight quantizer, weight elements it covers) for every quantizable weight,
    fused MoE experts (`<proj>_weight_quantizers`, one per expert) included."""
    import torch.nn as nn

    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):  # wrapped by ModelOpt but never given a weight format
            continue
        for attr, child in module.named_children():
            if attr == "weight_quantizer" and isinstance(getattr(module, "weight", None), nn.Parameter):
                yield name, child, module.weight.numel()
            elif attr.endswith("_weight_quantizers") and isinstance(child, nn.ModuleList) and len(child):
                param = getattr(module, attr[: -len("_weight_quantizers")], None)
                if isinstance(param, nn.Parameter):
                    for quantizer in child:
                        yield name, quantizer, param.numel() // len(child)


def effective_bits(model) -> float:
    """Weight bits per parameter over every quantizable weight, unquantized ones (e.g. the
    output head) at 16: the quantity auto-quantize's `effective_bits` budget constrains."""
    total = bits = 0.0
    for _, quantizer, numel in weight_quantizers(model):
        total += numel
        bits += numel * _bits(quantizer)
    return round(bits / total, 4) if total else 16.0


def _quantizer_label(module) -> str:
    bits = module.num_bits
    block = getattr(module, "block_sizes", None)
    return f"{bits}" + (f" block {dict(block)}" if block else "")


def quantizer_entries(model, global_name: Callable[[str], str] = lambda name: name) -> Dict[str, Dict[str, Any]]:
    """What `quantizer_summary` counts, per module name (mapped by `global_name`, so that the
    pieces a model-parallel rank holds can be merged by name across ranks):
    {"quantizers": {name: (parent, role label)}, "layers": {name: (export format, weight
    elements, weight bits)}}."""
    from modelopt.torch.export.quant_utils import get_quantization_format
    from modelopt.torch.quantization.nn import TensorQuantizer

    quantizers: Dict[str, Tuple[str, str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, TensorQuantizer) and module.is_enabled:
            parts = name.split(".")
            if parts[-1].isdigit():  # fused MoE experts: <proj>_weight_quantizers.<expert>
                parent, role = ".".join(parts[:-2]), parts[-2].removesuffix("_quantizers")
            else:
                parent, role = ".".join(parts[:-1]), parts[-1].removesuffix("_quantizer")
            quantizers[global_name(name)] = (global_name(parent), f"{role} {_quantizer_label(module)}")
    sizes: Dict[str, list] = {}
    for name, quantizer, numel in weight_quantizers(model):
        size = sizes.setdefault(name, [0, 0.0])
        size[0] += numel
        size[1] += numel * _bits(quantizer)
    layers = {global_name(name): (get_quantization_format(model.get_submodule(name)) or "none", numel, bits)
              for name, (numel, bits) in sizes.items()}
    return {"quantizers": quantizers, "layers": layers}


def summary_of(entries: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """`quantizer_summary`'s record of `quantizer_entries` (of one model, or merged by name)."""
    quantizers, layers = entries["quantizers"], entries["layers"]
    total = sum(numel for _, numel, _ in layers.values())
    bits = sum(b for _, _, b in layers.values())
    formats = {name: fmt for name, (fmt, _, _) in sorted(layers.items())}
    return {
        "quantized_modules": len({parent for parent, _ in quantizers.values()}),
        "effective_bits": round(bits / total, 4) if total else 16.0,
        # the weights effective_bits averages over (what a model's byte size is computed from)
        "weight_elements": total,
        "layer_formats": dict(sorted(Counter(formats.values()).items())),
        "formats": dict(sorted(Counter(role for _, role in quantizers.values()).items())),
        "layers": formats,
    }


def quantizer_summary(model) -> Dict[str, Any]:
    """Per-layer export formats (ModelOpt's own classification), layer counts per format,
    enabled quantizer counts by role and numeric format, and effective weight bits."""
    return summary_of(quantizer_entries(model))


def format_table(summary: Dict[str, Any]) -> str:
    """The log's view: one line per export format with its layer count."""
    lines = [f"  {fmt:<24} {count:>5} layers" for fmt, count in summary["layer_formats"].items()]
    lines.append(f"  effective weight bits {summary['effective_bits']:.3f}")
    return "\n".join(lines)


def quantization_record(model, task, result, expert_tokens, summary=None) -> Dict[str, Any]:
    """The manifest's `quantization` block: what was asked for and what the model holds
    (`summary`: the handle's quantizer_summary, whole-model on every backend)."""
    import logging

    from modelopt.torch.quantization.nn import TensorQuantizer

    summary = summary if summary is not None else quantizer_summary(model)
    record = {
        "format": "auto_quantize" if result.search_report else formats.format_name(task),
        "algorithm": result.algorithm,
        "kv_cache": task.kv_cache, "weight_only": task.weight_only, "disable_qkv": task.disable_qkv,
        "cpu_block_fakequant": any(BACKEND_NAME in str(m.backend) for m in model.modules() if isinstance(m, TensorQuantizer)),
        **summary,
    }
    if result.search_report:
        record["auto_quantize"] = result.search_report
    if expert_tokens:
        unrouted = moe.unrouted_experts(expert_tokens)
        record["experts_without_calibration_tokens"] = unrouted
        if unrouted:
            logging.getLogger("optmodel").warning(
                "%d MoE experts received no calibration tokens (weight amax from the weights, input amax shared "
                "across the layer's experts): %s. More or more varied calibration data covers them.",
                sum(len(v) for v in unrouted.values()), unrouted)
    return record
