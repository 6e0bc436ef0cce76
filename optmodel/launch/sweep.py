"""Sweep bookkeeping: each job's run dir, which jobs a re-run can skip, and the sweep record.

A job is skipped (resumed sweep) when its run dir holds a manifest that says `completed`
and the run there had the same overrides; a completed run with other overrides in that
dir is refused rather than overwritten or mistaken for this job.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from optmodel.config.validate import ConfigError
from optmodel.facts.rundir import MANIFEST_NAME, read_manifest
from optmodel.manifest import atomic_write_text

SWEEP_RECORD = "sweep.json"
# A plain run handed to a cluster launcher keeps its job record beside submitit's files,
# so its run dir holds only the run.
PLAIN_RECORD = Path(".submitit") / SWEEP_RECORD


@dataclass
class SweepJob:
    num: int
    overrides: List[str]
    run_dir: str
    # pending | skipped (completed earlier) | submitted | completed | failed | not run | not started
    # | cancelled / timeout / preempted / node_fail ... (Slurm's word for how the job ended)
    state: str = "pending"
    job_id: Optional[str] = None  # Slurm / submitit job id
    log: Optional[str] = None  # where the job's stdout goes
    error: Optional[str] = None
    nodes: Optional[int] = None
    tasks_per_node: Optional[int] = None


def completed_overrides(run_dir: Path) -> Optional[List[str]]:
    """The overrides of a completed (or gated) run in `run_dir`, None when there is none."""
    manifest = Path(run_dir) / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        if read_manifest(run_dir).get("status") not in ("completed", "gated"):  # gated: measured, over budget
            return None
    except (OSError, json.JSONDecodeError):
        return None
    stored = Path(run_dir) / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(stored.read_text()) or []) if stored.is_file() else []


def already_done(job: SweepJob) -> bool:
    """True when this job completed in an earlier run of the sweep (skip it)."""
    done = completed_overrides(Path(job.run_dir))
    if done is None:
        return False
    if sorted(done) != sorted(job.overrides):
        raise ConfigError([
            f"hydra.sweep.dir: job {job.num}'s run dir {job.run_dir} holds a completed run with other "
            f"overrides ({' '.join(done) or 'none'}) than this job ({' '.join(job.overrides) or 'none'}). "
            f"Fix: resume with the same sweep values, or pick a new hydra.sweep.dir."
        ])
    return True


def record_path(sweep_dir: Path) -> Path:
    """sweep.json of a sweep, or the job record of a plain run."""
    plain = Path(sweep_dir) / PLAIN_RECORD
    return plain if plain.is_file() and not (Path(sweep_dir) / SWEEP_RECORD).is_file() else Path(sweep_dir) / SWEEP_RECORD


def write_record(sweep_dir: Path, launcher: str, jobs: Sequence[SweepJob], plain: bool = False) -> Path:
    """sweep.json: one entry per job (merged with earlier batches of the same sweep)."""
    path = Path(sweep_dir) / (PLAIN_RECORD if plain else SWEEP_RECORD)
    known: Dict[int, Dict[str, Any]] = {}
    if path.is_file():
        known = {j["num"]: j for j in json.loads(path.read_text()).get("jobs", [])}
    rows = [asdict(j) if isinstance(j, SweepJob) else dict(j) for j in jobs]  # SweepJobs or read-back dicts
    known.update({row["num"]: row for row in rows})
    record = {"sweep_dir": str(sweep_dir), "launcher": launcher, "plain": plain,
              "jobs": [known[n] for n in sorted(known)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_record_file(sweep_dir: Path) -> Optional[Dict[str, Any]]:
    path = record_path(sweep_dir)
    return json.loads(path.read_text()) if path.is_file() else None


def read_record(sweep_dir: Path) -> Optional[List[Dict[str, Any]]]:
    record = read_record_file(sweep_dir)
    return record["jobs"] if record is not None else None
