"""What a run measured, read from its manifest: accuracy before (the base) and after, and size.

Light (no torch, no optmodel imports beyond the manifest name): config validation, the
accuracy gate and `optmodel compare` all read metrics through these functions.

Accuracy metrics are recorded as `<metric>_before` / `<metric>_after` by the tasks that
change a model (quantize, prune, finetune, distill: held-out `perplexity`, `mmlu`,
`mmlu_macro`, lm-eval `<task>/<metric>`; eagle3: `al`), and plainly as `<metric>` by the
tasks that only measure one (mmlu, eval). A pipeline records each step's metrics under
`steps.<name>.metrics`: the base is the first step's `before`, the value the last step's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

ACCURACY_NAMES = ("perplexity", "mmlu", "mmlu_macro", "al")  # plus every lm-eval "<task>/<metric>"
STAGES = ("_before", "_after")
# Unquantized weights are counted at the deployable 16 bits (bf16 / fp16 export), as
# quantization's effective_bits counts them.
UNQUANTIZED_BITS = 16.0


def is_accuracy_metric(name: str) -> bool:
    return name in ACCURACY_NAMES or "/" in name


def lower_is_better(metric: str) -> bool:
    """Perplexities (held-out, lm-eval word / byte perplexity) fall as a model improves;
    accuracies and acceptance length rise."""
    return "perplexity" in metric or metric.endswith("ppl") or "bits_per_byte" in metric


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def measured(metric_dicts: Iterable[Dict[str, Any]]) -> Tuple[Dict[str, float], Dict[str, float]]:
    """(base, value) per accuracy metric over metric dicts in the order they were measured:
    the base is the first `<m>_before`, the value the last `<m>_after` (or plain `<m>`)."""
    base: Dict[str, float] = {}
    value: Dict[str, float] = {}
    for metrics in metric_dicts:
        for key, v in (metrics or {}).items():
            if not is_number(v):
                continue
            if key.endswith("_before") and is_accuracy_metric(key[:-len("_before")]):
                base.setdefault(key[:-len("_before")], float(v))
            elif key.endswith("_after") and is_accuracy_metric(key[:-len("_after")]):
                value[key[:-len("_after")]] = float(v)
            elif is_accuracy_metric(key):
                value[key] = float(v)
    return base, value


def trained_models(manifest: Dict[str, Any], run_dir: Optional[Path] = None) -> Tuple[Optional[str], Optional[str]]:
    """(student, teacher) of a training run, else (None, None), as its `training` record names
    them: finetune / distill (QAT / QAD) the model they trained (finetune has no teacher); eagle3
    its draft (`student_output`: the output that holds it, relative to `run_dir`) and the frozen
    target it learned from."""
    training = manifest.get("training") or {}
    if not isinstance(training, dict):
        return None, None
    student = training.get("student")
    output = (manifest.get("outputs") or {}).get(training.get("student_output") or "")
    if output:
        student = str(Path(run_dir) / output) if run_dir is not None and not Path(output).is_absolute() else output
    teacher = training.get("teacher")
    if not student:
        return None, None
    return str(student), (str(teacher) if teacher else None)


def short_path(path: Optional[str]) -> str:
    """A checkpoint or run dir by its last two parts, for tables: `tiny_models/tiny_qwen3`, `prune/0`."""
    if not path:
        return ""
    parts = Path(path).parts
    return str(Path(*parts[-2:])) if len(parts) > 2 else str(path)


def ordered_metrics(manifest: Dict[str, Any]) -> List[Dict[str, Any]]:
    """A run's metric dicts in measurement order: a pipeline's steps in order, else its metrics."""
    steps = manifest.get("steps")
    if isinstance(steps, dict) and steps:
        return [s.get("metrics") or {} for s in steps.values() if isinstance(s, dict)]
    return [manifest.get("metrics") or {}]


def drop(metric: str, base: float, value: float) -> float:
    """How much worse `value` is than `base`, in the gate's units: perplexity-like metrics in
    % of the base (relative increase), accuracies in points (absolute decrease x 100)."""
    if lower_is_better(metric):
        return 100.0 * (value / base - 1.0)
    return 100.0 * (base - value)


DROP_UNITS = {True: "% (relative increase)", False: "points (absolute decrease, x100)"}


def drop_unit(metric: str) -> str:
    return DROP_UNITS[lower_is_better(metric)]


def model_bytes(parameters: Optional[int], quantization: Optional[Dict[str, Any]]) -> Optional[float]:
    """Deployable weight bytes: quantized weights at their format's effective bits (scales
    included), every other parameter at 16 bits. None when the manifest does not tell."""
    if not is_number(parameters):
        return None
    if not quantization:
        return parameters * UNQUANTIZED_BITS / 8
    bits, covered = quantization.get("effective_bits"), quantization.get("weight_elements")
    if not (is_number(bits) and is_number(covered)):
        return None
    return (bits * covered + UNQUANTIZED_BITS * (parameters - covered)) / 8


def sizes(manifest: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """The produced model's size measures: parameters, active parameters, effective bits, bytes."""
    arch = manifest.get("architecture") or {}
    if not arch:  # a run that ended before it recorded its model
        return {"model_bytes": None, "effective_bits": None, "parameters": None, "active_parameters": None}
    quant = manifest.get("quantization") or None
    params, active = arch.get("parameters"), arch.get("active_parameters")
    bits = quant.get("effective_bits") if quant else UNQUANTIZED_BITS
    return {"model_bytes": model_bytes(params, quant), "effective_bits": bits if is_number(bits) else None,
            "parameters": params if is_number(params) else None,
            "active_parameters": active if is_number(active) else None}


def base_sizes(manifest: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """The size of the model the run started from: a pruning run records parameters before;
    a run that kept the shape (quantize, distill, ...) started from its produced shape."""
    params = active = None
    for metrics in ordered_metrics(manifest):
        params = params if params is not None else metrics.get("parameters_before")
        active = active if active is not None else metrics.get("active_parameters_before")
    arch = manifest.get("architecture") or {}
    params = params if is_number(params) else arch.get("parameters")
    active = active if is_number(active) else arch.get("active_parameters")
    if not is_number(params):
        return {"model_bytes": None, "effective_bits": UNQUANTIZED_BITS, "parameters": None, "active_parameters": None}
    return {"model_bytes": model_bytes(params, None), "effective_bits": UNQUANTIZED_BITS, "parameters": params,
            "active_parameters": active if is_number(active) else None}
