"""Checks a quantized model must pass before anything is exported."""

from __future__ import annotations

from typing import Any, Dict, List

from optmodel.quantization import moe


class QuantizeError(RuntimeError):
    """The quantized model failed a check; nothing was exported."""


def check_calibrated(model, result) -> None:
    """Every enabled quantizer holds an amax (formats with no calibration by design, e.g.
    W4A8_MXFP4_FP8, keep dynamic activation scales and are not checked)."""
    missing = moe.uncalibrated_quantizers(model) if result.calibrated else []
    if missing:
        raise QuantizeError(
            f"{len(missing)} enabled quantizers have no calibrated amax (e.g. {', '.join(missing[:5])}); exporting "
            f"them would write meaningless scales. Fix: more calibration data (data.num_samples), or a format "
            f"that leaves these layers unquantized."
        )


def check_generations(rows: List[Dict[str, Any]]) -> None:
    """Each completion starts with its reference (rows without a reference are not checked)."""
    failed = [g for g in rows if g.get("matches") is False]
    if failed:
        with_reference = sum(1 for g in rows if "reference" in g)
        raise QuantizeError(
            f"generation check: {len(failed)} of {with_reference} completions differ from their "
            f"reference, e.g. prompt {failed[0]['prompt']!r} gave {failed[0]['completion']!r}, expected "
            f"{failed[0]['reference']!r}. Nothing was exported."
        )
