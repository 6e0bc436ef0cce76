"""Watching submitted jobs until each has an outcome: completed, failed, cancelled, ...

A job's own result (submitit's result pickles) says completed / failed; for Slurm jobs the
scheduler is asked too, so a job cancelled (running or pending), timed out, preempted or
lost with its node is reported as such instead of being waited on forever, a job pending
for a reason that cannot clear (PartitionNodeLimit, ...) is cancelled and reported with the
fix, and a job that left the queue without a result is named even without accounting.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hydra.core.utils import JobReturn, JobStatus

from optmodel.facts.rundir import MANIFEST_NAME
from optmodel.launch import slurm
from optmodel.launch.sweep import SweepJob

log = logging.getLogger("optmodel")

POLL_S = 1.0
# A job that ended in Slurm gets this long for its result files to show up (shared file systems).
RESULT_GRACE_S = 15.0
# Results written, Slurm still running the job (exiting, epilog): wait this long for it to end.
EXIT_GRACE_S = 60.0


class RankError(Exception):
    """A rank's failure as text ("ConfigError: ..."): what the job pickles for the watcher, as
    not every exception survives pickling (ConfigError's constructor takes a list)."""

    @classmethod
    def of(cls, err: BaseException) -> "RankError":
        return err if isinstance(err, cls) else cls(f"{type(err).__name__}: {err}")


def _describe(value: Any) -> str:
    return str(value) if isinstance(value, RankError) else f"{type(value).__name__}: {value}"


def last_error_line(traceback_text: str) -> str:
    """'ValueError: ...' out of a traceback (the last unindented line naming an exception)."""
    lines = [l for l in traceback_text.strip().splitlines() if l and not l[0].isspace() and ":" in l]
    return lines[-1] if lines else (traceback_text.strip().splitlines() or ["unknown error"])[-1]


def _task_outcomes(sub) -> List[Optional[Tuple[str, Any]]]:
    """Each rank's (outcome, value) from its result pickle; None while it has none."""
    from submitit.core.utils import pickle_load

    outcomes = []
    for rank in range(sub.num_tasks):
        path = sub.task(rank).paths.result_pickle
        try:
            outcomes.append(pickle_load(path) if path.exists() else None)
        except (EOFError, OSError):  # still being written
            outcomes.append(None)
    return outcomes


def failed_rank(outcomes) -> Optional[str]:
    """The error of the first rank that ended badly, None while none has."""
    for rank, got in enumerate(outcomes):
        if got is None:
            continue
        outcome, ret = got
        if outcome == "error":  # the rank raised outside the Hydra job (setup, signals): a traceback
            return f"rank {rank}: {last_error_line(str(ret))}"
        if isinstance(ret, JobReturn) and ret.status == JobStatus.FAILED:
            return f"rank {rank}: {_describe(ret._return_value)}"
    return None


def metrics_line(run_dir: str) -> str:
    """Rank 0's summary of a finished job: its numeric metrics, from the manifest."""
    try:
        metrics = json.loads((Path(run_dir) / MANIFEST_NAME).read_text()).get("metrics") or {}
    except (OSError, json.JSONDecodeError):
        return ""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
                    if isinstance(v, (int, float)) and not isinstance(v, bool))


def _stopped_by_signal(rank_error: str) -> bool:
    return "Terminated:" in rank_error or "interrupted (signal" in rank_error or "KeyboardInterrupt" in rank_error


class Watcher:
    def __init__(self, use_slurm: bool, fail_fast: bool) -> None:
        self.reader = slurm.StateReader() if use_slurm else None
        self.fail_fast = fail_fast
        self._ended_at: Dict[str, float] = {}

    def _outcome(self, job: SweepJob, sub, state: Optional[slurm.JobState]) -> Optional[Tuple[str, Optional[str]]]:
        """(state, error) once the job has an outcome, None while it has to be waited on."""
        outcomes = _task_outcomes(sub)
        rank_error = failed_rank(outcomes)
        if state is not None and state.state in slurm.ENDED_BADLY:
            why = f"Slurm: {state.state}" + (f" ({state.reason})" if state.reason else "")
            return state.state.lower(), f"{why}{'; ' + rank_error if rank_error else ''}; log {job.log}"
        if rank_error is not None and state is not None and state.active and _stopped_by_signal(rank_error) \
                and not self._waited(sub.job_id, RESULT_GRACE_S):
            return None  # scancel / preemption: the ranks' results come before Slurm's CANCELLED / PREEMPTED
        if rank_error is not None:
            if state is None or state.active:  # the other ranks would wait for it in a collective forever
                sub.cancel(check=False)
            return "failed", rank_error
        if state is not None and state.never_starts:
            slurm.cancel([sub.job_id])
            return "not started", f"{state.never_starts} (cancelled slurm job {sub.job_id})"
        if all(o is not None for o in outcomes):
            ended = state is None or not state.active or self._waited(sub.job_id, EXIT_GRACE_S)
            if not ended:
                return None  # results written, the job still exiting: not done yet
            ret = outcomes[0][1]
            if isinstance(ret, JobReturn) and ret.status == JobStatus.COMPLETED:
                return "completed", None
            return "failed", _describe(getattr(ret, "_return_value", ret))
        if state is None:  # the local executor: its process ending without results
            if not sub.done():
                return None
            return "failed", f"the job ended without a result; log {job.log}"
        if not state.active and self._waited(sub.job_id, RESULT_GRACE_S):
            known = state.state if state.state != "UNKNOWN" else "no longer in the queue"
            return "failed", f"the job left the queue without a result (Slurm: {known}); log {job.log}"
        return None

    def _waited(self, job_id: str, grace_s: float) -> bool:
        first = self._ended_at.setdefault(job_id, time.monotonic())
        return time.monotonic() - first > grace_s

    def wait(self, submitted: List[Tuple[SweepJob, Any]], on_done=None) -> None:
        """Collect each job's outcome as it ends; fail_fast cancels the rest at the first failure."""
        pending = list(submitted)
        while pending:
            states = self.reader.states([sub.job_id for _, sub in pending]) if self.reader else {}
            for job, sub in list(pending):
                got = self._outcome(job, sub, states.get(str(sub.job_id)))
                if got is None:
                    continue
                pending.remove((job, sub))
                job.state, job.error = got
                if on_done:
                    on_done(job)
                if job.state != "completed" and self.fail_fast:
                    for other, other_sub in pending:
                        other_sub.cancel(check=False)
                        other.state, other.error = "not run", f"cancelled: fail_fast after job {job.num} {job.state}"
                    pending = []
                    break
            if pending:
                time.sleep(POLL_S)
