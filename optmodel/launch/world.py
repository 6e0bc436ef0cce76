"""The ranks of one run: join the process group and agree on where results go."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Dict, List, Tuple

from omegaconf import DictConfig

from optmodel.distributed import LaunchEnv, detect_launch_env, init_world
from optmodel.facts.machine import torch_device

log = logging.getLogger("optmodel")


def join_world(cfg: DictConfig, run_dir: Path) -> Tuple[LaunchEnv, Path, List[Dict[str, Any]]]:
    """Join this launch's process group and return (launch env, the run dir, every rank's info).

    Every rank must write to one run dir. optmodel's launchers already hand all ranks the
    same dir; a dir resolved per process (e.g. `${now:}` under a bare torchrun / srun) would
    differ by a second, so rank 0's dir wins and a disagreement is logged.
    """
    launch = detect_launch_env()
    me = {"rank": launch.rank, "local_rank": launch.local_rank, "world_size": launch.world_size,
          "host": socket.gethostname(), "pid": os.getpid(), "run_dir": str(run_dir),
          # submitit exports torchrun-style variables; name the launcher that really started us
          "launcher": f"submitit-{os.environ['SUBMITIT_EXECUTOR']}" if os.environ.get("SUBMITIT_EXECUTOR") else launch.launcher}
    if launch.world_size == 1:
        return launch, Path(run_dir), [me]
    import torch.distributed as dist

    init_world(torch_device(cfg.backend).type, launch)  # cuda or cpu, as the backend will pick it
    me.update(world_size=dist.get_world_size(), backend=dist.get_backend())  # as the process group sees it
    ranks: List[Dict[str, Any]] = [None] * launch.world_size  # type: ignore[list-item]
    dist.all_gather_object(ranks, me)
    agreed = Path(ranks[0]["run_dir"])
    if any(r["run_dir"] != ranks[0]["run_dir"] for r in ranks):
        log.warning("ranks resolved different run dirs %s; all use rank 0's %s",
                    sorted({r["run_dir"] for r in ranks}), agreed)
    return launch, agreed, ranks
