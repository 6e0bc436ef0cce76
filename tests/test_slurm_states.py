"""Slurm requests and states the launcher gets right without a cluster (stand-in sinfo /
squeue, stand-in job objects); tests/test_slurm_cluster.py runs the real single-node one."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus

from optmodel.launch import refresh, resources, slurm, sweep, watch
from optmodel.launch.sweep import SweepJob

from test_termination import STANDIN, _Sub


@pytest.mark.parametrize("key, value, needle", [
    ("nodes", 0, "hydra.launcher.nodes: must be >= 1, got 0. Fix: hydra.launcher.nodes=null"),
    ("gpus_per_node", -1, "hydra.launcher.gpus_per_node: must be >= 0, got -1"),
    ("timeout_min", 0, "Slurm reads a 0 time limit as none at all"),
    ("cpus_per_task", 0, "hydra.launcher.cpus_per_task: must be >= 1"),
])
def test_launcher_numbers_slurm_would_misread_are_refused(key, value, needle):
    problems = resources.launcher_problems({"nodes": None, "timeout_min": 240, key: value})
    assert len(problems) == 1 and needle in problems[0]
    assert resources.launcher_problems({"nodes": 2, "gpus_per_node": 0, "timeout_min": 1, "cpus_per_task": 4}) == []


def test_an_unknown_partition_is_refused_before_sbatch_and_leaves_no_run_dir(tmp_path):
    env = {**os.environ, "PATH": f"{STANDIN}:{os.environ['PATH']}", "FAKE_SLURM_PARTITION": "batch|2|16|64000|(null)"}
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "optmodel", "hydra/launcher=slurm", "hydra.launcher.partition=bach",
                           f"run.output_dir={run_dir}"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "hydra.launcher.partition: no Slurm partition named 'bach'. Did you mean batch?" in proc.stderr
    assert not run_dir.exists() and not (tmp_path / "record").exists()


def test_partition_names_come_from_sinfo_and_none_off_a_cluster(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{STANDIN}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_PARTITION", "cpu|2|16|64000|(null)")
    assert slurm.partition_names() == ["cpu"]
    assert resources.partition_problem("gpu", ["cpu"]).startswith("hydra.launcher.partition: no Slurm partition")
    assert resources.partition_problem("gpu", None) is None  # not a Slurm cluster: nothing to check against
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo at all
    assert slurm.partition_names() is None


def test_a_one_rank_cpu_job_asks_for_the_node_s_cpus(monkeypatch):
    from hydra_plugins.optmodel_launchers.launchers import OptmodelSlurmLauncher

    monkeypatch.setenv("PATH", f"{STANDIN}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_PARTITION", "cpu|2|16|64000|(null)")
    launcher = OptmodelSlurmLauncher.__new__(OptmodelSlurmLauncher)
    launcher.params = {"partition": "cpu", "gpus_per_node": None, "cpus_per_task": None, "tasks_per_node": None,
                       "timeout_min": 5, "signal_delay_s": 60}
    one = resources.Allocation(1, 1)
    assert launcher._request(one)["cpus_per_task"] == 16
    assert launcher._request(resources.Allocation(1, 4))["cpus_per_task"] == 4
    params = resources.slurm_parameters(launcher._request(one), one, "j", 0)
    assert params["cpus_per_task"] == 16 and "gpus_per_node" not in params


def _error_result(path: Path, text: str):
    ret = JobReturn()
    ret.status, ret._return_value = JobStatus.FAILED, watch.RankError(text)
    path.write_bytes(pickle.dumps(("success", ret)))


def test_a_job_scancelled_while_running_reads_cancelled_not_failed(tmp_path, monkeypatch):
    """The ranks' results (Terminated by SIGTERM) land before Slurm says CANCELLED."""
    monkeypatch.setattr(watch, "RESULT_GRACE_S", 30)
    sub = _Sub(tmp_path)
    _error_result(sub._path, "Terminated: terminated by signal 15 (SIGTERM)")
    job = SweepJob(num=0, overrides=[], run_dir=str(tmp_path), log="/logs/77")
    watcher = watch.Watcher(use_slurm=False, fail_fast=False)
    assert watcher._outcome(job, sub, slurm.JobState("RUNNING")) is None  # waits for Slurm's word
    assert watcher._outcome(job, sub, slurm.JobState("CANCELLED"))[0] == "cancelled"
    _error_result(sub._path, "ValueError: a real failure")
    assert watch.Watcher(use_slurm=False, fail_fast=False)._outcome(job, sub, slurm.JobState("RUNNING"))[0] == "failed"


def test_summary_states_follow_slurm_completing_and_the_current_pending_reason(tmp_path, monkeypatch):
    states = {"1": slurm.JobState("COMPLETING"), "2": slurm.JobState("PENDING", "Resources")}
    monkeypatch.setattr(slurm.StateReader, "states", lambda self, ids: {i: states[i] for i in ids})
    jobs = [SweepJob(num=n, overrides=[], run_dir=str(tmp_path / str(n)), log="", state="running", job_id=str(n + 1),
                     error="pending: Priority") for n in range(2)]
    sweep.write_record(tmp_path, "slurm", jobs)
    got = {j["job_id"]: (j["state"], j["error"]) for j in refresh.refresh(tmp_path)}
    assert got == {"1": ("completing", None), "2": ("pending", "pending: Resources")}
