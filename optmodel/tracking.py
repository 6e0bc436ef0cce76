"""Metrics to the console, the manifest and (logger=wandb) Weights & Biases."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("optmodel")
metrics_log = logging.getLogger("optmodel.metrics")  # file only: the manifest and the summary show them


class Tracker:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.wandb_run = None
        if cfg.logger.name == "wandb" and cfg.logger.mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                group=cfg.logger.group,
                tags=list(cfg.logger.tags),
                mode=cfg.logger.mode,
                dir=str(run_dir),
                name=f"{cfg.task.name}-{cfg.model.name}",
                config=OmegaConf.to_container(cfg, resolve=True),
            )

    def log(self, metrics: Dict[str, Any]) -> None:
        for key, value in metrics.items():
            metrics_log.info("metric %s = %s", key, f"{value:.6g}" if isinstance(value, float) else value)
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    def close(self, failed: bool = False) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=1 if failed else 0)
            self.wandb_run = None
