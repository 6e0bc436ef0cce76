"""Asking Slurm: job states (squeue, then sacct), a partition's nodes (sinfo), scancel.

squeue knows every job until MinJobAge after it ends (states included, no accounting
needed); sacct knows older ones where accounting runs. A job neither knows left the queue.
Every call is bounded by a timeout and a missing / failing command reads as "unknown", so
the launcher decides what to do, never a hang.
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

log = logging.getLogger("optmodel")

CALL_TIMEOUT_S = 20
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "STAGE_OUT",
          "SIGNALING", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT")
# Ended without a result of the job's own: the launcher names them as such.
ENDED_BADLY = ("CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "REVOKED")
# Pending reasons that never clear by waiting, with what to change.
NEVER_STARTS = {
    "PartitionNodeLimit": "the job asks for more nodes than the partition allows or has. Fix: fewer nodes "
                          "(hydra.launcher.nodes / tasks_per_node / gpus_per_node) or a larger hydra.launcher.partition",
    "PartitionTimeLimit": "hydra.launcher.timeout_min exceeds the partition's MaxTime. Fix: a smaller timeout_min",
    "PartitionConfig": "the request does not fit the partition's limits. Fix: check `scontrol show partition`",
    "BadConstraints": "no node has the requested features / resources. Fix: hydra.launcher.constraint, "
                      "gpus_per_node, cpus_per_task or mem",
    "DependencyNeverSatisfied": "a job it depends on failed. Fix: resubmit without that dependency",
    "InvalidAccount": "the account is not valid. Fix: hydra.launcher.account",
    "InvalidQOS": "the QOS is not valid. Fix: hydra.launcher.qos",
}


@dataclass(frozen=True)
class JobState:
    state: str  # Slurm's word: PENDING, RUNNING, COMPLETED, CANCELLED, ... or UNKNOWN
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def never_starts(self) -> Optional[str]:
        """Why a pending job can never start, with the fix; None when it may still start."""
        if self.state != "PENDING":
            return None
        key = next((k for k in NEVER_STARTS if self.reason.startswith(k)), None)
        return f"pending ({self.reason}): {NEVER_STARTS[key]}" if key else None


def _call(args: Sequence[str]) -> Optional[str]:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=CALL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


class StateReader:
    """Job states for one sweep; says once (not at every poll) that accounting is missing."""

    def __init__(self) -> None:
        self.accounting: Optional[bool] = None

    def states(self, job_ids: Sequence[str]) -> Dict[str, JobState]:
        ids = [str(i) for i in job_ids if i]
        found: Dict[str, JobState] = {}
        if not ids:
            return found
        out = _call(["squeue", "-h", "--states=all", "-j", ",".join(ids), "-o", "%i|%T|%r"])
        for line in (out or "").splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0] in ids:
                found[parts[0]] = JobState(parts[1], "" if parts[2] in ("None", "(null)") else parts[2])
        missing = [i for i in ids if i not in found]
        if missing and self.accounting is not False:
            out = _call(["sacct", "-n", "-X", "-P", "-j", ",".join(missing), "-o", "JobID,State,Reason"])
            if out is None:
                self.accounting = False
                log.warning("sacct gives no job states here (no Slurm accounting): a job that leaves the queue "
                            "without a result is reported as such, not by its Slurm state")
            else:
                self.accounting = True
                for line in out.splitlines():
                    parts = line.strip().split("|")
                    if len(parts) >= 2 and parts[0] in missing:
                        found[parts[0]] = JobState(parts[1].split()[0] if parts[1] else "UNKNOWN",
                                                   parts[2] if len(parts) > 2 and parts[2] != "None" else "")
        return {i: found.get(i, JobState("UNKNOWN")) for i in ids}


def cancel(job_ids: Sequence[str]) -> bool:
    ids = [str(i) for i in job_ids if i]
    return not ids or _call(["scancel", *ids]) is not None


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: int
    cpus: int  # per node (the smallest node)
    mem_mb: int  # per node (the smallest node)
    gpus: int  # per node (the smallest node); 0: no GPUs


def _gpus(gres: str) -> int:
    """GPUs in a sinfo %G string: 'gpu:8', 'gpu:h100:8(S:0-1)', '(null)'."""
    total = 0
    for item in gres.split(","):
        m = re.match(r"gpu(?::[^:(]+)?:(\d+)", item.strip())
        if m:
            total += int(m.group(1))
    return total


def partition_names() -> Optional[List[str]]:
    """Every partition of the cluster (sinfo); None when sinfo cannot tell (not on a Slurm
    cluster). An unknown partition is then refused by name instead of disabling the checks."""
    out = _call(["sinfo", "-h", "-o", "%P"])
    if out is None:
        return None
    return sorted({line.strip().rstrip("*") for line in out.splitlines() if line.strip()})


def partition(name: Optional[str]) -> Optional[Partition]:
    """The partition a job goes to (the default one when name is None); None when sinfo
    cannot tell (not on a Slurm cluster), and the launcher then checks nothing."""
    args = ["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G"] + (["-p", name] if name else [])
    out = _call(args)
    if not out:
        return None
    rows: List[List[str]] = [l.split("|") for l in out.splitlines() if l.count("|") == 4]
    if not name:  # the default partition carries a '*'
        default = next((r[1] for r in rows if r[1].endswith("*")), None)
        if default is None:
            return None
        rows = [r for r in rows if r[1] == default]
    if not rows:
        return None
    nodes = {r[0]: r for r in rows}
    mems = [int(re.sub(r"\D", "", r[3]) or 0) for r in nodes.values()]
    return Partition(name=rows[0][1].rstrip("*"), nodes=len(nodes),
                     cpus=min(int(re.sub(r"\D", "", r[2]) or 0) for r in nodes.values()),
                     mem_mb=min(mems), gpus=min(_gpus(r[4]) for r in nodes.values()))


def mem_mb(value: str) -> Optional[int]:
    """An sbatch --mem value in MB ('64G', '1000', '2T'); None for 0 (all of the node)."""
    m = re.fullmatch(r"(\d+)([KMGT]?)B?", str(value).strip().upper())
    if not m or int(m.group(1)) == 0:
        return None
    return int(int(m.group(1)) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 ** 2}[m.group(2)])
