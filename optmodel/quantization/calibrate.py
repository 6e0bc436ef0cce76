"""Quantize a handle's model: a fixed ModelOpt format (mtq.quantize, calibrated through the
handle's forward loop) or a per-layer mixed-precision search (mtq.auto_quantize)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from optmodel.allocator import release_freed_memory
from optmodel.quantization import auto, cpu_fakequant, formats


@dataclass
class CalibrationResult:
    algorithm: Any = None  # the calibration algorithm of a fixed format (None: no calibration by design)
    search_report: Optional[Dict[str, Any]] = None  # auto-quantize: the per-layer choice

    @property
    def calibrated(self) -> bool:
        """Whether every enabled quantizer is expected to hold an amax."""
        return self.search_report is not None or self.algorithm is not None


def build_config(task, on_cpu: bool) -> Dict[str, Any]:
    """The `mtq.quantize` config of the run: format or recipe, options, CPU routing."""
    cfg = formats.build_quant_config(task)
    if task.sync_expert_weight_amax:
        algorithm = cfg.get("algorithm") or "max"
        if isinstance(algorithm, str):
            algorithm = {"method": algorithm}
        if algorithm.get("method") == "max":
            cfg["algorithm"] = {**algorithm, "sync_expert_weight_amax": True}
    if on_cpu and cpu_fakequant.needs_cpu_path(cfg):
        cpu_fakequant.register()
        cfg = cpu_fakequant.route_to_cpu(cfg)
    return cfg


def _auto_quantize(handle, task, batches: List[dict], run_dir: Path, on_cpu: bool):
    settings = task.auto_quantize
    candidates = []
    for name in settings.formats:
        fmt = formats.with_options(formats.named_config(name), task)
        candidates.append(cpu_fakequant.route_to_cpu(fmt) if on_cpu and cpu_fakequant.needs_cpu_path(fmt) else fmt)
    if on_cpu:
        cpu_fakequant.register()
    checkpoint = Path(settings.checkpoint) if settings.checkpoint else run_dir / "auto_quantize_search.pth"
    return auto.search(handle.model, batches, settings, candidates, checkpoint,
                       lambda b: {k: v.to(handle.device) for k, v in b.items()})


def quantize(handle, task, batches: List[dict], run_dir: Path) -> CalibrationResult:
    """Quantize `handle.model` in place (handle.model is the quantized model afterwards)."""
    import modelopt.torch.quantization as mtq

    release_freed_memory()  # the baseline measurement's freed activations: not held through calibration
    on_cpu = handle.device.type == "cpu"
    if task.auto_quantize.enabled:
        handle.model, report = _auto_quantize(handle, task, batches, run_dir, on_cpu)
        return CalibrationResult(search_report=report)
    mtq_cfg = build_config(task, on_cpu)
    # every batch through the whole model (megatron: all pipeline stages and ranks in step)
    handle.model = mtq.quantize(handle.model, mtq_cfg, handle.forward_loop(batches))
    return CalibrationResult(algorithm=mtq_cfg.get("algorithm", "max"))  # ModelOpt calibrates with max when unset


def compress(model) -> Dict[str, int]:
    """Real low-bit weights in memory (mtq.compress); weight bytes before and after."""
    import modelopt.torch.quantization as mtq

    before = parameter_bytes(model)
    mtq.compress(model)
    return {"weight_bytes_before_compress": before, "weight_bytes_after_compress": parameter_bytes(model)}


def parameter_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
