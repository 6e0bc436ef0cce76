"""The accuracy gate at run time: before a run writes its model (save, export) and when its
task ends, the change of task.gate.metric from the base the run measured before its change
is checked against task.gate.max_drop (units: optmodel/config/gate.py). The verdict goes to
the manifest (`gate`); over budget raises Gated: the run ends with status `gated`, exit
status EXIT_GATED, and no model or export written after the measurement."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional

from optmodel.facts.errors import ConfigError
from optmodel.facts.measures import drop, drop_unit, measured

EXIT_GATED = 3


class Gated(Exception):
    """A run over its accuracy budget (not a failure: the measurement is the answer)."""

    def __init__(self, verdict: Dict[str, Any]):
        self.verdict = verdict
        super().__init__(verdict["verdict"])

    def __reduce__(self):  # pickled across ranks / submitit jobs
        return (type(self), (self.verdict,))


def verdict(gate, metric_dicts: Iterable[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The gate's verdict over metrics in measurement order; None when there is no gate or
    its metric has not been measured both before and after yet."""
    if gate is None or gate.get("metric") is None:
        return None
    metric, budget = str(gate.metric), float(gate.max_drop)
    base, value = measured(metric_dicts)
    if metric not in base or metric not in value:
        return None
    change = drop(metric, base[metric], value[metric])
    passed = change <= budget + 1e-9  # exactly at the budget passes (float rounding of the ratio)
    unit = drop_unit(metric).split(" ")[0]
    text = (f"{metric} {base[metric]:.4g} -> {value[metric]:.4g}: {'worse' if change > 0 else 'change'} by "
            f"{change:.3g}{unit if unit == '%' else ' ' + unit}, max_drop {budget:g}{unit if unit == '%' else ' ' + unit}: "
            f"{'within budget' if passed else 'over budget, no model written'}")
    return {"metric": metric, "max_drop": budget, "base": base[metric], "value": value[metric], "drop": change,
            "unit": drop_unit(metric), "passed": passed, "verdict": text}


def enforce(gate, metric_dicts: Iterable[Dict[str, Any]], record: Callable[..., None], final: bool = False) -> None:
    """Record the verdict; raise Gated when over budget. final: the metric must have been
    measured by now (a name the evaluation did not produce fails the run, naming what it did)."""
    metric_dicts = list(metric_dicts)
    result = verdict(gate, metric_dicts)
    if result is None:
        if final and gate is not None and gate.get("metric") is not None:
            base, value = measured(metric_dicts)
            raise ConfigError([f"task.gate.metric: {gate.metric!r} was not measured before and after (measured before: "
                               f"{', '.join(sorted(base)) or 'nothing'}; after: {', '.join(sorted(value)) or 'nothing'}). "
                               f"Fix: task.gate.metric=<one of those>."])
        return
    record(gate=result)
    if not result["passed"]:
        raise Gated(result)
