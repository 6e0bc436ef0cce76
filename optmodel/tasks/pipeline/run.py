"""task=pipeline: several tasks in order on one model load, in one run dir.

    load -> step 1 -> step 2 -> ... (each: its task's own run(ctx))

The model loads once; each step runs its task's runner with a step context whose cfg.task
is the step's config and whose `load_model()` returns the shared in-memory handle (a second
model, e.g. a teacher, still loads from its source). What a step leaves on the handle (the
quantized or pruned model) is what the next step gets, with the record the earlier steps
wrote as the handle's origin (an export step checks the quantizers against it). Outputs keep
their task's names; the manifest records `steps.<name>` (status, seconds, metrics, outputs),
the flat metrics of every step (`<step>/<metric>`, and each plain name with the latest step's
value) and `model_loads`. A failing step stops the pipeline: it is
recorded failed, named in the error, and the earlier steps' outputs stay.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from optmodel.config.inherit import with_model_fields
from optmodel.distributed import is_rank0
from optmodel.facts.errors import ConfigError
from optmodel.gate import Gated
from optmodel.run import RunContext
from optmodel.tasks.pipeline.steps import step_config
from optmodel.tasks.registry import preflight as task_preflight, task_runner, task_spec

log = logging.getLogger("optmodel")


class PipelineStepError(RuntimeError):
    """A step failed; the message names it (the cause is chained)."""


@dataclass
class StepContext(RunContext):
    """A task's context inside a pipeline: the run's model is the shared handle."""

    shared: Any = None
    sources: List[str] = field(default_factory=list)  # other models the step loaded (e.g. a teacher)
    pipeline: Optional[RunContext] = None  # the pipeline's own context (its task.gate)
    measured: Dict[str, Any] = field(default_factory=dict)  # the metrics this step recorded

    def load_model(self, source=None):
        if source is None:
            return self.shared
        self.sources.append(str(source))
        return super().load_model(source)

    def record(self, **fields: Any) -> None:
        if isinstance(fields.get("metrics"), dict):
            self.measured.update(fields["metrics"])
        super().record(**fields)

    def gate_measurements(self) -> List[Dict[str, Any]]:
        return [self.measured]

    def enforce_gate(self, final: bool = False, current: Optional[Dict[str, Any]] = None) -> None:
        """The step's own task.<step>.gate (its verdict under the manifest's `step_gates.<step>`),
        then the pipeline's task.gate (`gate`) over the steps so far and this one."""
        super().enforce_gate(final=final)
        if self.pipeline is not None:
            self.pipeline.enforce_gate(current=self.measured)

    def record_gate(self, gate: Dict[str, Any]) -> None:
        """A step's verdict beside the other steps' (the pipeline's own keeps `gate`)."""
        gates = dict(self.manifest.data.get("step_gates") or {})
        gates[self.cfg.task.name] = gate
        self.record(step_gates=gates)


def preflight(cfg) -> None:
    """Each step's own preflight (e.g. eval's lm-eval task names) before the run dir is claimed."""
    for name in cfg.task.steps:
        task_preflight(step_config(cfg, name))


def run(ctx) -> Dict[str, Any]:
    cfg, steps = ctx.cfg, list(ctx.cfg.task.steps)
    start = time.perf_counter()
    handle = ctx.load_model()
    record: Dict[str, Dict[str, Any]] = {name: {"status": "pending"} for name in steps}
    ctx.record(model_loads=1, other_model_loads=[], steps=record)  # loads from disk: this one, plus e.g. a teacher
    model_cfg, metrics, other_loads = cfg.model, {}, []
    for i, name in enumerate(steps):
        step_cfg = step_config(cfg, name)
        step_cfg.model = model_cfg  # the shape the earlier steps produced (e.g. pruned layers)
        step = StepContext(cfg=step_cfg, run_dir=ctx.run_dir, manifest=ctx.manifest, tracker=ctx.tracker, shared=handle,
                           pipeline=ctx)
        outputs_before = dict(ctx.manifest.data.get("outputs") or {})
        record[name] = {"status": "running"}
        ctx.record(steps=record)
        log.info("pipeline step %d/%d: %s", i + 1, len(steps), name)
        step_start = time.perf_counter()

        def finish(status: str, **fields) -> None:
            other_loads.extend(step.sources)
            record[name] = {"status": status, "seconds": round(time.perf_counter() - step_start, 3), **fields,
                            "outputs": new_outputs(outputs_before, ctx.manifest.data.get("outputs"))}
            ctx.record(steps=record, model_loads=1 + len(other_loads), other_model_loads=other_loads)

        try:
            step_metrics = task_runner(name)(step)
        except BaseException as err:
            finish("gated" if isinstance(err, Gated) else "failed", error=f"{type(err).__name__}: {err}",
                   metrics=dict(step.measured))  # what it measured before it stopped
            named = step_error(err, i, len(steps), name)
            if named is err:
                raise
            raise named from err
        finish("completed", metrics=step_metrics)
        if task_spec(name).changes_model:
            handle.changed_by.append(name)  # what a later step's summary says of the model it was handed
        # flat: every step's figures under "<step>/<metric>" (two steps' perplexity both kept), and
        # the plain names holding the latest step's, i.e. the figures of the model the pipeline made
        flat = {**step_metrics, **{f"{name}/{k}": v for k, v in step_metrics.items()}}
        metrics.update(flat)
        ctx.record(metrics=flat)
        arch = handle.architecture()
        model_cfg = with_model_fields(model_cfg, {k: v for k, v in arch.items() if k in model_cfg})
        handle.origin = dict(ctx.manifest.data)  # the next step's model comes from this run's record
    metrics["pipeline_seconds"] = round(time.perf_counter() - start, 3)
    if is_rank0():
        print(f"optmodel pipeline: {' -> '.join(steps)} on {cfg.model.name}, {1 + len(other_loads)} model load(s), "
              f"{metrics['pipeline_seconds']:.1f} s\n  run dir     {ctx.run_dir}", flush=True)
    return metrics


def new_outputs(before: Dict[str, Any], after: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    return {k: v for k, v in (after or {}).items() if before.get(k) != v}


def step_error(err: BaseException, i: int, count: int, name: str) -> BaseException:
    """The error the run fails with: named after the step; a config problem stays a
    ConfigError (exit 2), an interrupt stays itself (the run's signal handling needs it)."""
    where = f"pipeline step {i + 1}/{count} ({name})"
    if isinstance(err, Gated):  # the run ends gated, not failed
        return err
    if isinstance(err, ConfigError):
        return ConfigError([f"{where}: {p}" for p in err.problems])
    if not isinstance(err, Exception):
        return err
    return PipelineStepError(f"{where} failed: {type(err).__name__}: {err}")
