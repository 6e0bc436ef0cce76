"""One run: validate, open the run dir, dispatch the task, record the outcome."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from optmodel import backends
from optmodel.allocator import release_freed_memory
from optmodel.checked import resolve_run_config, validate
from optmodel.claim import claim_run_dir
from optmodel.config.chosen import group_was_chosen
from optmodel.distributed import barrier, broadcast_from_rank0, is_rank0
from optmodel.facts.checkpoint import resolve_checkpoint
from optmodel.facts.errors import ConfigError, MeasuredFailure
from optmodel.facts.measures import ordered_metrics
from optmodel.facts.rundir import relative_outputs
from optmodel.gate import Gated, enforce
from optmodel.launch import signals
from optmodel.launch.preemption import was_requeued
from optmodel.launch.signals import Terminated  # noqa: F401  (a BaseException: libraries cannot swallow it)
from optmodel.launch.world import join_world
from optmodel.manifest import Manifest, atomic_dir, atomic_write_text
from optmodel.plan import dry_run
from optmodel.tasks.registry import preflight, task_runner, task_spec
from optmodel.tracking import Tracker

log = logging.getLogger("optmodel")


@dataclass
class RunContext:
    """What a task gets: the validated config, where its results go, and the writes every
    task makes (rank 0 writes files, handles write models collectively, the manifest
    records each output as it completes)."""

    cfg: DictConfig
    run_dir: Path
    manifest: Manifest
    tracker: Tracker

    def load_model(self, source=None, stored_dtype: bool = False):
        """The run's model (source None), or a second model from a checkpoint or run dir.
        stored_dtype: with backend.dtype=auto, hold the weights in the dtype they are stored
        in (a conversion, which does no arithmetic)."""
        return backends.load(self.cfg, source=source, stored_dtype=stored_dtype)

    def record(self, **fields: Any) -> None:
        """Merge into the manifest: dict fields (metrics, outputs, ...) update, others replace.
        Outputs inside the run dir are recorded relative to it (the dir may move)."""
        if "outputs" in fields:
            fields["outputs"] = relative_outputs(fields["outputs"], self.run_dir)
        merged = {k: ({**(self.manifest.data.get(k) or {}), **v} if isinstance(v, dict) and k != "architecture" else v)
                  for k, v in fields.items()}
        self.manifest.update(**merged)

    def log_metrics(self, metrics: Dict[str, Any]) -> None:
        self.tracker.log({k: v for k, v in metrics.items() if not isinstance(v, dict)})
        self.record(metrics=metrics)

    def write_file(self, key: str, name: str, text: str) -> Path:
        """<run dir>/<name> (text) written by rank 0, recorded as outputs[key]."""
        path = self.run_dir / name
        if is_rank0():
            atomic_write_text(path, text)
        self.record(outputs={key: str(path)})
        return path

    def write_output(self, key: str, name: str, write: Callable[[Path], Any]) -> Path:
        """<run dir>/<name>/ filled by `write(partial_dir)` on rank 0, renamed when complete."""
        final = self.run_dir / name
        if is_rank0():
            with atomic_dir(final) as partial:
                write(partial)
        barrier()
        self.record(outputs={key: str(final)})
        return final

    def enforce_gate(self, final: bool = False, current: Optional[Dict[str, Any]] = None) -> None:
        """task.gate: a run over its accuracy budget stops here (Gated, status `gated`); see
        optmodel/gate.py. current: metrics measured since the recorded ones (a pipeline step's)."""
        enforce(self.cfg.task.get("gate"), self.gate_measurements() + ([current] if current else []),
                self.record_gate, final=final)

    def record_gate(self, gate: Dict[str, Any]) -> None:
        """The gate's verdict in the manifest (`gate`)."""
        self.record(gate=gate)

    def gate_measurements(self) -> List[Dict[str, Any]]:
        return ordered_metrics(self.manifest.data)

    def save_model(self, handle, name: str = "model", key: str = "saved_model") -> Path:
        """The restorable model (every rank calls: the handle decides who writes), recorded
        with the architecture and model config it has, so `run.load=<this run>` rebuilds it.
        A run over its accuracy budget writes none (enforce_gate)."""
        self.enforce_gate(final=True)
        release_freed_memory()  # a save adds copies of the weights: not on top of freed activations
        path = handle.save(self.run_dir / name)
        self.record(outputs={key: str(path)})
        self.record_model(handle)
        return path

    def export_model(self, handle, fmt: str, dtype: str, name: str = "export") -> Path:
        self.enforce_gate(final=True)
        release_freed_memory()
        path = handle.export(self.run_dir / name, format=fmt, dtype=dtype)
        self.record(outputs={"export": str(path), "export_format": fmt, "export_dtype": dtype})
        return path

    def record_model(self, handle) -> None:
        """architecture (as produced) and model_config (what a later run.load inherits)."""
        arch = handle.architecture()
        model_config = OmegaConf.to_container(self.cfg.model, resolve=True)
        model_config.update({k: v for k, v in arch.items() if k in model_config})
        self.record(architecture=arch, model_config=model_config)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_was_typed() -> bool:
    """Whether the user (or an experiment) chose model=; False outside a Hydra run."""
    return group_was_chosen("model")




def checked_config(cfg: DictConfig, typed_model: Optional[bool] = None) -> DictConfig:
    """The config a run executes (run.load: its shape; model=auto: config.json's; format
    short names: the *_CFG name), validated, its inputs checked (ConfigError when not).
    A dry run is validated by its plan instead."""
    cfg = resolve_run_config(cfg, model_was_typed() if typed_model is None else typed_model)
    if not cfg.run.get("dry_run"):
        validate(cfg)
        preflight(cfg)
    return cfg


def execute(cfg: DictConfig, run_dir: Path, typed_model: Optional[bool] = None) -> Dict[str, Any]:
    """Run `cfg.task` with its results in `run_dir`; returns the task's metrics.

    Validation comes first and raises ConfigError before anything is loaded or written.
    run.dry_run=true stops after validation: it prints the plan and writes nothing.
    """
    cfg = checked_config(cfg, typed_model)
    if cfg.run.get("dry_run"):
        return dry_run(cfg)
    launch, run_dir, ranks = join_world(cfg, Path(run_dir))  # all ranks: one process group, one run dir
    claim = claim_for_run(cfg, run_dir, launch.is_rank0)  # before anything is written there
    try:
        return _run_claimed(cfg, run_dir, launch, ranks)
    finally:
        if claim is not None:
            claim.release()


def claim_for_run(cfg: DictConfig, run_dir: Path, is_rank0: bool):
    """Rank 0 locks the run dir and checks it holds no other run's record; every rank gets
    the verdict (ConfigError on all of them, so none waits for the others)."""
    held, problems = None, None
    if is_rank0:
        try:
            held = claim_run_dir(run_dir, cfg.task.name, resume=bool(cfg.run.get("resume")), relaunch=in_multirun(),
                                 resumable=task_spec(cfg.task.name).resumable)
        except ConfigError as err:
            problems = err.problems
    problems = broadcast_from_rank0(problems)
    if problems:
        raise ConfigError(problems)
    return held


def in_multirun() -> bool:
    """A sweep job (its launcher owns the job dirs and re-runs a failed job in its own dir)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ImportError, ValueError):
        return False


def _run_claimed(cfg: DictConfig, run_dir: Path, launch, ranks) -> Dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)  # ranks on other nodes than rank 0's
    if launch.is_rank0:  # rank 0 alone writes the run dir's config and manifest
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    ckpt = resolve_checkpoint(cfg.model)
    manifest = Manifest(run_dir, task=cfg.task.name, model=cfg.model.name, input_checkpoint=str(ckpt) if ckpt else None,
                        persist=launch.is_rank0)
    if cfg.run.get("load"):
        manifest.update(loaded_from=str(cfg.run.load))
    if len(ranks) > 1:
        manifest.update(world={"size": launch.world_size, "ranks": ranks})
    # One wandb run per job, from rank 0; the other ranks log to the console only.
    tracker = Tracker(cfg if launch.is_rank0 else OmegaConf.merge(cfg, {"logger": {"name": "none"}}), run_dir)
    failed = True
    previous_handlers = signals.install()  # SIGTERM / SIGINT / USR2 raise Terminated
    try:
        seed_everything(cfg.run.seed)
        task = task_runner(cfg.task.name)
        ctx = RunContext(cfg=cfg, run_dir=run_dir, manifest=manifest, tracker=tracker)
        metrics = task(ctx)
        signals.raise_if_requested()  # a termination the task swallowed still fails the run
        ctx.enforce_gate(final=True)  # a run that wrote no model is gated all the same
        manifest.update(metrics={**manifest.data["metrics"], **metrics})
        manifest.finish("completed")
        failed = False
        return metrics
    except Gated as err:  # over its accuracy budget: an answer, not a failure
        manifest.finish("gated", error=f"gated: {err}")
        log.warning("gated: %s", err)
        raise
    except BaseException as err:
        with signals.deferred():  # a second signal does not cut the record of the first short
            reason = signals.interruption(err) or f"{type(err).__name__}: {err}"
            # A resumable task saved for a Slurm requeue is not failed: it continues in the requeued job.
            if was_requeued():
                reason = ("requeued by Slurm (time limit or preemption): the task saved its state and the "
                          "requeued job continues it in this run dir")
            manifest.finish("requeued" if was_requeued() else "failed", error=reason)
            if signals.interruption(err) or was_requeued() or isinstance(err, MeasuredFailure):
                log.error("task %s %s", cfg.task.name, reason)  # a stop asked for, a bound missed: no traceback
            else:
                log.exception("task %s failed", cfg.task.name)
        raise
    finally:
        with signals.deferred():
            tracker.close(failed=failed)
        signals.restore(previous_handlers)  # the caller (a sweep, a test) keeps its own handling
