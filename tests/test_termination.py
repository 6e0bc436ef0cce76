"""A cancelled run never reads as completed, and the launcher's watcher names how a job
ended: signals that land inside a library's `except Exception`, Slurm end states a single
node cannot produce (TIMEOUT, PREEMPTED, NODE_FAIL; stand-in job objects), jobs lost without
accounting, and requests checked against a GPU partition (stand-in sinfo)."""

from __future__ import annotations

import logging
import os
import signal
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from optmodel.launch import resources, signals, slurm, watch
from optmodel.launch.sweep import SweepJob
from optmodel.facts.rundir import read_manifest

from conftest import compose_cfg

STANDIN = Path(__file__).parent / "slurm_standin"


def _run_with_task(monkeypatch, tmp_path, task):
    import optmodel.run as run_module

    monkeypatch.setattr(run_module, "task_runner", lambda name: task)
    return run_module.execute(compose_cfg(), tmp_path)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGUSR2"])
def test_signal_inside_a_libraries_except_exception_fails_the_run(monkeypatch, tmp_path, sig):
    """What ModelOpt's import_plugin does: `try: ... except Exception as e: log(e)`."""
    seen = []

    def task(ctx):
        try:
            signal.raise_signal(getattr(signal, sig))  # handled in this thread before it returns
        except Exception as err:  # noqa: BLE001  (the library's catch-all)
            seen.append(err)
        return {"ran_to_the_end": 1}

    with pytest.raises(signals.Terminated, match=sig):
        _run_with_task(monkeypatch, tmp_path, task)
    assert seen == [], "the termination went past `except Exception`"
    manifest = read_manifest(tmp_path)
    assert manifest["status"] == "failed" and sig in manifest["error"]
    assert "ran_to_the_end" not in manifest["metrics"]


def test_termination_swallowed_even_by_except_baseexception_still_fails(monkeypatch, tmp_path):
    def task(ctx):
        try:
            signal.raise_signal(signal.SIGTERM)  # handled in this thread before it returns
        except BaseException:  # noqa: BLE001  (worst case: drops everything)
            pass
        return {"ran_to_the_end": 1}

    with pytest.raises(signals.Terminated, match="results are not trusted"):
        _run_with_task(monkeypatch, tmp_path, task)
    assert read_manifest(tmp_path)["status"] == "failed"
    assert signal.getsignal(signal.SIGTERM) is not signals._handler, "the caller's handler is back"


def test_a_run_without_a_signal_completes(monkeypatch, tmp_path):
    assert _run_with_task(monkeypatch, tmp_path, lambda ctx: {"steps": 3}) == {"steps": 3}
    assert read_manifest(tmp_path)["status"] == "completed"


# -- the watcher, with stand-in job objects for end states a single node cannot produce ---

class _Sub:
    """The part of a submitit job the watcher reads: its id, tasks and result pickles."""

    def __init__(self, tmp_path, job_id="77"):
        self.job_id, self.num_tasks, self.cancelled = job_id, 1, False
        self._path = tmp_path / f"{job_id}_0_result.pkl"

    def task(self, rank):
        return SimpleNamespace(paths=SimpleNamespace(result_pickle=self._path))

    def cancel(self, check=False):
        self.cancelled = True


@pytest.mark.parametrize("state", ["TIMEOUT", "PREEMPTED", "NODE_FAIL", "CANCELLED"])
def test_watcher_reports_how_slurm_ended_the_job(tmp_path, state):
    job = SweepJob(num=0, overrides=[], run_dir=str(tmp_path), log="/logs/77_0_log.out")
    got = watch.Watcher(use_slurm=False, fail_fast=False)._outcome(job, _Sub(tmp_path), slurm.JobState(state))
    assert got == (state.lower(), f"Slurm: {state}; log /logs/77_0_log.out")


def _bin(tmp_path, name, body):
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_job_gone_from_the_queue_without_accounting_is_reported_once_warned(tmp_path, monkeypatch, caplog):
    """No accounting (sacct fails), squeue has forgotten the job, no result: not a hang."""
    _bin(tmp_path, "squeue", "exit 0")  # the job is no longer listed
    _bin(tmp_path, "sacct", "echo 'sacct: error: Slurm accounting storage is disabled' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setattr(watch, "RESULT_GRACE_S", 0.3)
    monkeypatch.setattr(watch, "POLL_S", 0.05)
    jobs = [(SweepJob(num=n, overrides=[], run_dir=str(tmp_path), log=f"/logs/{n}"), _Sub(tmp_path, str(50 + n)))
            for n in range(2)]
    with caplog.at_level(logging.WARNING, logger="optmodel"):
        watch.Watcher(use_slurm=True, fail_fast=False).wait(jobs)
    for job, _ in jobs:
        assert job.state == "failed"
        assert job.error == f"the job left the queue without a result (Slurm: no longer in the queue); log {job.log}"
    assert sum("no Slurm accounting" in r.message for r in caplog.records) == 1, "said once per sweep, not per poll"


# -- requests against a GPU partition (stand-in sinfo) -----------------------------------

def test_gpu_partition_gives_one_gpu_per_rank_and_whole_nodes_only_when_all_are_used(monkeypatch):
    monkeypatch.setenv("PATH", f"{STANDIN}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_PARTITION", "gpu|4|112|1000000|gpu:h100:8(S:0-1)")
    part = slurm.partition(None)
    assert part == slurm.Partition(name="gpu", nodes=4, cpus=112, mem_mb=1000000, gpus=8)
    one = resources.Allocation(1, 1)
    params = resources.slurm_parameters({"gpus_per_node": 1, "timeout_min": 5, "signal_delay_s": 60}, one, "j", 8)
    assert "exclusive" not in params and "mem" not in params["additional_parameters"], "a 1-GPU job shares the node"
    full = resources.Allocation(2, 8)
    params = resources.slurm_parameters({"gpus_per_node": 8, "timeout_min": 5, "signal_delay_s": 60}, full, "j", 8)
    assert params["exclusive"] and params["additional_parameters"]["mem"] == "0"
    too_big = resources.fit_problems({"gpus_per_node": 8, "mem": "2T", "cpus_per_task": 16}, resources.Allocation(5, 8),
                                     part)
    assert [p.split(":")[0].split(" ")[0] for p in too_big] == ["the", "8", "hydra.launcher.mem=2T"]
    assert "5 node(s) x 8 rank(s)" in too_big[0] and "Fix: fewer nodes" in too_big[0]


def test_pending_reasons_that_cannot_clear_are_named_with_a_fix():
    assert "Fix: fewer nodes" in slurm.JobState("PENDING", "PartitionNodeLimit").never_starts
    assert slurm.JobState("PENDING", "Resources").never_starts is None  # waits for a node: may start
    assert slurm.JobState("PENDING", "Priority").never_starts is None
    assert slurm.JobState("RUNNING", "PartitionNodeLimit").never_starts is None
