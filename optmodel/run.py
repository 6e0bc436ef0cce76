"""One run: validate, open the run dir, dispatch the task, record the outcome."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

from omegaconf import DictConfig, OmegaConf

from optmodel.config.validate import validate
from optmodel.launch import signals
from optmodel.launch.preemption import was_requeued
from optmodel.launch.signals import Terminated  # noqa: F401  (a BaseException: libraries cannot swallow it)
from optmodel.launch.world import join_world
from optmodel.manifest import Manifest, atomic_write_text
from optmodel.models.checkpoint import resolve_checkpoint
from optmodel.tasks import get_task
from optmodel.tracking import Tracker

log = logging.getLogger("optmodel")


@dataclass
class RunContext:
    """What a task gets: the validated config and where its results go."""

    cfg: DictConfig
    run_dir: Path
    manifest: Manifest
    tracker: Tracker


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def execute(cfg: DictConfig, run_dir: Path) -> Dict[str, Any]:
    """Run `cfg.task` with its results in `run_dir`; returns the task's metrics.

    Validation comes first and raises ConfigError before anything is loaded or written.
    run.dry_run=true stops after validation: it prints the plan and writes nothing.
    """
    if cfg.run.get("dry_run"):
        from optmodel.plan import dry_run

        return dry_run(cfg)
    validate(cfg)
    launch, run_dir, ranks = join_world(cfg, Path(run_dir))  # all ranks: one process group, one run dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if launch.is_rank0:  # rank 0 alone writes the run dir's config and manifest
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    ckpt = resolve_checkpoint(cfg.model)
    manifest = Manifest(run_dir, task=cfg.task.name, model=cfg.model.name, input_checkpoint=str(ckpt) if ckpt else None,
                        persist=launch.is_rank0)
    if len(ranks) > 1:
        manifest.update(world={"size": launch.world_size, "ranks": ranks})
    # One wandb run per job, from rank 0; the other ranks log to the console only.
    tracker = Tracker(cfg if launch.is_rank0 else OmegaConf.merge(cfg, {"logger": {"name": "none"}}), run_dir)
    failed = True
    previous_handlers = signals.install()  # SIGTERM / SIGINT / USR2 raise Terminated
    try:
        seed_everything(cfg.run.seed)
        task = get_task(cfg.task.name)
        metrics = task(RunContext(cfg=cfg, run_dir=run_dir, manifest=manifest, tracker=tracker))
        signals.raise_if_requested()  # a termination the task swallowed still fails the run
        manifest.update(metrics={**manifest.data["metrics"], **metrics})
        manifest.finish("completed")
        failed = False
        return metrics
    except BaseException as err:
        # A resumable task saved for a Slurm requeue is not failed: it continues in the requeued job.
        manifest.finish("requeued" if was_requeued() else "failed", error=f"{type(err).__name__}: {err}")
        log.exception("task %s failed", cfg.task.name)
        raise
    finally:
        tracker.close(failed=failed)
        signals.restore(previous_handlers)  # the caller (a sweep, a test) keeps its own handling
