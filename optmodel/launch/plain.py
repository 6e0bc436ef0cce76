"""A plain (non `-m`) run with a cluster launcher: submitted as a one-job sweep.

Hydra engages launchers only under `-m`; with optmodel's Slurm or local-ranks launcher
selected, `optmodel hydra/launcher=slurm ...` re-runs itself as a one-job multirun whose
job dir is this run's dir, so the one flag is enough and results land where a plain run's do.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

SUBMITTING_LAUNCHERS = ("OptmodelSlurmLauncher", "OptmodelLocalRanksLauncher")


def submitting_launcher() -> bool:
    """Whether this plain run goes to optmodel's Slurm or local-ranks launcher."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return hc.mode == RunMode.RUN and str(hc.launcher.get("_target_", "")).endswith(SUBMITTING_LAUNCHERS)


def hand_to_launcher() -> Optional[int]:
    """Exit status of the submitted run, or None when this run executes here."""
    from hydra.core.hydra_config import HydraConfig

    if not submitting_launcher():
        return None
    hc = HydraConfig.get()
    run_dir = hc.runtime.output_dir
    args = [a for a in sys.argv[1:] if not a.startswith(("hydra.sweep.dir=", "hydra.sweep.subdir="))]
    cmd = [sys.executable, "-m", "optmodel", "--multirun", *args, f"hydra.sweep.dir={run_dir}", "hydra.sweep.subdir=."]
    print(f"optmodel: handing this run to {hc.launcher._target_.rsplit('.', 1)[-1]} (run dir {run_dir})", flush=True)
    child = subprocess.Popen(cmd)
    # kill / Ctrl-C of this command reach the submitter, which cancels what it submitted.
    forward = lambda signum, frame: child.send_signal(signum)  # noqa: E731
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if status == 2 and not (Path(run_dir) / ".submitit").exists():
        # Refused before anything was submitted: leave no run dir that looks like a run. Only
        # what Hydra made here goes: a dir the user named that existed before keeps its files.
        if run_dir_was_new(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            shutil.rmtree(Path(run_dir) / ".hydra", ignore_errors=True)
            (Path(run_dir) / "optmodel.log").unlink(missing_ok=True)
    return status


_EXISTED: dict = {}  # run dir -> whether it existed before Hydra created it (cli's on_run_start)


def note_run_dir(run_dir) -> None:
    _EXISTED[str(Path(run_dir).absolute())] = Path(run_dir).exists()


def run_dir_was_new(run_dir) -> bool:
    return _EXISTED.get(str(Path(run_dir).absolute())) is False
