"""The `slurm_cluster` fixture: a real single-node Slurm cluster (launchers/local_slurm.sh),
started once per test module as root, stopped (every daemon, by pid) at its end, skipped
with the reason where it cannot start."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "launchers" / "local_slurm.sh"
NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
ACCOUNTING = ("slurmdbd", "mariadbd", "mariadb-install-db", "sacct")


@pytest.fixture(scope="module")
def slurm_cluster():
    """SLURM_CONF of a running cluster (also set in os.environ while the module runs)."""
    if os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs root (slurmd starts jobs as their user)")
    missing = [b for b in NEEDED if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): "
                    f"apt-get install slurmctld slurmd slurm-client munge slurmdbd mariadb-server")
    accounting = all(shutil.which(b) for b in ACCOUNTING)
    state = Path(tempfile.mkdtemp(prefix="optmodel-slurm-"))  # not under pytest's 0700 dir: munge must reach it
    start = time.perf_counter()
    proc = subprocess.run(["bash", str(SCRIPT), "start", str(state)] + (["--accounting"] if accounting else []),
                          capture_output=True, text=True, timeout=240)
    if proc.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, timeout=60)
        shutil.rmtree(state, ignore_errors=True)
        pytest.skip(f"the local Slurm cluster did not start: {proc.stderr.strip().splitlines()[-1:]}")
    print(f"local Slurm cluster (accounting={accounting}) up in {time.perf_counter() - start:.1f} s")
    conf = str(state / "slurm.conf")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        yield {"SLURM_CONF": conf, "accounting": accounting}
    finally:
        if accounting:  # the jobs' CPU time (they run under slurmd, not under pytest): their steps' sum
            rows = subprocess.run(["sacct", "-a", "-n", "-P", "-S", "now-1days", "-o", "JobID,TotalCPU"],
                                  capture_output=True, text=True, timeout=30).stdout.split()
            steps = [r.split("|") for r in rows if "." in r.split("|")[0]]
            print(f"\nSlurm jobs of this module: {len({s[0].split('.')[0] for s in steps})}, "
                  f"CPU {sum(_seconds(s[1]) for s in steps if s[1]):.1f} s")
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def await_true(what: str, check, timeout_s: float = 120.0, poll_s: float = 0.2):
    """Poll `check()` until it returns something truthy (returned); fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T|%r"],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    return out


def _seconds(total_cpu: str) -> float:
    """sacct TotalCPU ([D-]HH:MM:SS or MM:SS.mmm) in seconds."""
    days, _, clock = total_cpu.rpartition("-")
    parts = [float(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return (int(days) if days else 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
