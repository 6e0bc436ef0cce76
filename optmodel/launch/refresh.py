"""Bring a sweep record (and its jobs' manifests) up to date with what Slurm says.

After `hydra.launcher.wait=false`, or when the waiting command was gone, sweep.json still
says `submitted`: the summary command asks Slurm (squeue / sacct) for those jobs first. A
job Slurm ended badly (cancelled while running or pending, timed out, preempted, node lost)
is recorded as such, and a manifest it left saying `running` or `failed` gets that state,
so neither record reads as if the job might still finish.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

from optmodel.facts.rundir import MANIFEST_NAME
from optmodel.launch import slurm, sweep
from optmodel.manifest import atomic_write_text

OPEN_STATES = ("submitted", "pending", "running", "completing")
SHOWN_STATES = ("PENDING", "RUNNING", "COMPLETING")  # Slurm's active states shown as they are


def _manifest(run_dir: str) -> Dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / MANIFEST_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _ended(job: Dict[str, Any], state: str, error: str) -> None:
    job["state"], job["error"] = state, error
    manifest = _manifest(job["run_dir"])
    if manifest and manifest.get("status") != "completed":
        manifest["status"] = state
        manifest["error"] = manifest.get("error") or error
        atomic_write_text(Path(job["run_dir"]) / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")


def refresh(sweep_dir: Path) -> List[Dict[str, Any]]:
    """The record's jobs with states refreshed from the manifests and Slurm (written back)."""
    record = sweep.read_record_file(Path(sweep_dir))
    if record is None:
        return []
    jobs = record["jobs"]
    open_jobs = [j for j in jobs if j.get("state") in OPEN_STATES]
    if not open_jobs:
        return jobs
    asked = slurm.StateReader().states([j["job_id"] for j in open_jobs]) if record.get("launcher") == "slurm" else {}
    for job in open_jobs:
        manifest = _manifest(job["run_dir"])
        got = asked.get(str(job.get("job_id")))
        if manifest.get("status") == "completed":
            job["state"], job["error"] = "completed", None
        elif got is not None and got.state in slurm.ENDED_BADLY:
            _ended(job, got.state.lower(), f"Slurm: {got.state}" + (f" ({got.reason})" if got.reason else ""))
        elif got is not None and got.active:
            job["state"] = got.state.lower() if got.state in SHOWN_STATES else "running"
            # the reason of this poll only: a job no longer pending carries no pending reason
            job["error"] = got.never_starts or (f"pending: {got.reason}" if got.state == "PENDING" and got.reason else None)
        elif manifest.get("status") in ("failed", "requeued"):
            job["state"], job["error"] = "failed", manifest.get("error")
        elif got is not None:  # ended (or purged from the queue) without a result of its own
            known = got.state if got.state != "UNKNOWN" else "no longer in the queue"
            _ended(job, "failed", f"the job left the queue without a result (Slurm: {known}); log {job.get('log')}")
    sweep.write_record(Path(sweep_dir), record["launcher"], jobs, plain=bool(record.get("plain")))
    return jobs
