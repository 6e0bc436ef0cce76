"""A Hydra callback that holds a launched job at its start until a release file exists, so a
launcher test can act while that job is surely still running (an event, never a guess at
seconds). Given on the command line, with tests/ on the jobs' PYTHONPATH:

    +hydra.callbacks.hold._target_=launch_holds.HoldUntilReleased
    +hydra.callbacks.hold.key=data.seq_len +hydra.callbacks.hold.value=16
    +hydra.callbacks.hold.release=/path/that/the/test/writes/when/done
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class HoldUntilReleased(Callback):
    """Holds the jobs whose config has `key` == `value`; writes `<release>.held` when it does."""

    def __init__(self, key: str, value: Any, release: str) -> None:
        self.key, self.value, self.release = key, str(value), Path(release)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(OmegaConf.select(config, self.key)) != self.value:
            return
        Path(f"{self.release}.held").touch()
        deadline = time.monotonic() + 600  # a cancelled job's SIGINT ends this wait; never left behind
        while not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
