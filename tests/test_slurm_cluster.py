"""The Slurm launcher against a real single-node Slurm cluster (slurmctld + slurmd + munge,
slurmdbd + MariaDB for accounting): 1-rank jobs in a 3-job sweep with its summary and
resume, a 2-rank gloo world, parallel=tp2 sized for a CPU partition, wait=false with the summary command,
scancel of a running and of a pending job, the submitter stopped, a job that can never
start, and requests the partition cannot hold refused before sbatch."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from optmodel.launch.sweep import SweepJob
from optmodel.launch.watch import Watcher
from optmodel.facts.rundir import read_manifest

from slurm_cluster import await_true, slurm_cluster, squeue_state  # noqa: F401  (fixture)

QUICK = ["task.export=false", "task.perplexity=false", "data.num_samples=2", "data.seq_len=64"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.timeout_min=10"]


def optmodel(*args: str, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optmodel", *args], capture_output=True, text=True,
                          timeout=timeout, cwd="/", **kw)


def record(path: Path):
    return json.loads(path.read_text())["jobs"] if path.is_file() else None


@pytest.fixture(scope="module")
def real_sweep(slurm_cluster, tmp_path_factory):  # noqa: F811
    sweep_dir = tmp_path_factory.mktemp("real_sweep")
    args = ["-m", "task.quant_cfg=FP8_DEFAULT_CFG,INT8_DEFAULT_CFG,INT8_SMOOTHQUANT_CFG", *SLURM, *QUICK,
            f"hydra.sweep.dir={sweep_dir}"]
    first = optmodel(*args)
    jobs = record(sweep_dir / "sweep.json")
    second = optmodel(*args, timeout=120)
    return sweep_dir, first, jobs, second


def test_three_job_sweep_completes_with_summary_on_real_slurm(real_sweep):
    sweep_dir, first, jobs, _ = real_sweep
    assert first.returncode == 0, first.stderr[-3000:]
    assert [j["state"] for j in jobs] == ["completed"] * 3
    assert all(j["nodes"] == 1 and j["tasks_per_node"] == 1 for j in jobs), "1-rank jobs"
    for j in jobs:  # Slurm agrees the job ended well, and the console printed rank 0's metrics
        assert squeue_state(j["job_id"]).startswith("COMPLETED"), squeue_state(j["job_id"])
        bits = read_manifest(Path(j["run_dir"]))["metrics"]["effective_bits"]
        assert re.search(rf"job {j['num']} completed: .*effective_bits={bits:.4g}", first.stdout), first.stdout
    assert "3 of 3 job(s) completed." in (sweep_dir / "summary.md").read_text()
    assert "Traceback" not in first.stderr and "sacct" not in first.stderr


def test_rerun_of_the_real_sweep_submits_nothing(real_sweep):
    sweep_dir, _, _, second = real_sweep
    assert second.returncode == 0, second.stderr[-3000:]
    assert [j["state"] for j in record(sweep_dir / "sweep.json")] == ["skipped"] * 3
    assert "-> slurm job" not in second.stdout


def test_two_rank_job_is_one_gloo_world(slurm_cluster, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    proc = optmodel(*SLURM, "hydra.launcher.tasks_per_node=2", *QUICK, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(1 node(s) x 2 rank(s))" in proc.stdout
    ranks = read_manifest(run_dir)["world"]["ranks"]
    assert [(r["rank"], r["world_size"], r["backend"], r["launcher"]) for r in ranks] == [
        (0, 2, "gloo", "submitit-slurm"), (1, 2, "gloo", "submitit-slurm")]
    assert len({r["pid"] for r in ranks}) == 2 and {r["run_dir"] for r in ranks} == {str(run_dir)}
    assert not (run_dir / "sweep.json").exists() and not (run_dir / "multirun.yaml").exists()
    assert not (run_dir / ".optmodel.lock").exists()  # the lock goes with the job


def test_scancel_of_a_running_and_a_pending_job_reads_cancelled(slurm_cluster, tmp_path):  # noqa: F811
    """wait=false, both jobs held (pending); job 0 released to run, then both cancelled."""
    sweep_dir = tmp_path / "sweep"
    proc = optmodel("-m", "task.quant_cfg=FP8_DEFAULT_CFG,INT8_SMOOTHQUANT_CFG", *SLURM, "hydra.launcher.wait=false",
                    "+hydra.launcher.additional_parameters.hold=true", "data.num_samples=32", "data.seq_len=128",
                    "task.export=false", f"hydra.sweep.dir={sweep_dir}", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"python -m optmodel.launch.summary {sweep_dir}" in proc.stdout
    running, pending = record(sweep_dir / "sweep.json")
    subprocess.run(["scontrol", "release", running["job_id"]], check=True, timeout=30)
    await_true("job 0 running its task", lambda: (Path(running["run_dir"]) / "optmodel.json").is_file())
    assert squeue_state(pending["job_id"]).startswith("PENDING")
    subprocess.run(["scancel", pending["job_id"], running["job_id"]], check=True, timeout=30)
    await_true("both jobs out of the queue", lambda: all(
        squeue_state(j["job_id"]).startswith("CANCELLED") for j in (running, pending)))
    summary = subprocess.run([sys.executable, "-m", "optmodel.launch.summary", str(sweep_dir)], capture_output=True,
                             text=True, timeout=120)
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert [j["state"] for j in record(sweep_dir / "sweep.json")] == ["cancelled", "cancelled"]
    manifest = read_manifest(Path(running["run_dir"]))
    assert manifest["status"] == "cancelled", manifest
    assert "| cancelled |" in (sweep_dir / "summary.md").read_text()


def test_stopping_the_waiting_submitter_cancels_its_job(slurm_cluster, tmp_path):  # noqa: F811
    """A parallel=tp2 job on the CPU partition, held: 1 node x 2 ranks (not 2 nodes x 1 rank,
    which could never start); stopping the waiting command cancels it."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "optmodel", *SLURM, "parallel=tp2", "backend=megatron", *QUICK,
                             f"hydra.run.dir={run_dir}", "+hydra.launcher.additional_parameters.hold=true"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        jobs = await_true("the job submitted", lambda: record(run_dir / ".submitit" / "sweep.json"))
        assert squeue_state(jobs[0]["job_id"]) == "PENDING|JobHeldUser"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "(1 node(s) x 2 rank(s))" in out and (jobs[0]["nodes"], jobs[0]["tasks_per_node"]) == (1, 2)
    assert "Traceback" not in err
    assert f"stopped: cancelled slurm job(s) {jobs[0]['job_id']}" in err
    assert squeue_state(jobs[0]["job_id"]).startswith("CANCELLED")
    assert record(run_dir / ".submitit" / "sweep.json")[0]["state"] == "cancelled"


def test_job_that_can_never_start_is_reported_with_the_fix_and_cancelled(slurm_cluster, tmp_path):  # noqa: F811
    """sbatch accepts 2 nodes on a 1-node partition (PD PartitionNodeLimit); the watcher does not wait."""
    import submitit

    executor = submitit.SlurmExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(nodes=2, ntasks_per_node=1, time=5)
    sub = executor.submit(print, "never")
    job = SweepJob(num=0, overrides=[], run_dir=str(tmp_path), job_id=str(sub.job_id), log=str(sub.paths.stdout))
    Watcher(use_slurm=True, fail_fast=False).wait([(job, sub)])
    assert job.state == "not started"
    # Slurm names PartitionConfig or PartitionNodeLimit, depending on its scheduling pass
    assert re.match(r"pending \((PartitionNodeLimit|PartitionConfig)\): .* Fix: ", job.error), job.error
    assert squeue_state(sub.job_id).startswith("CANCELLED")


@pytest.mark.parametrize("overrides, message", [
    (["hydra.launcher.gpus_per_node=8"], "has no GPUs. Fix: hydra.launcher.gpus_per_node=null or 0"),
    (["hydra.launcher.nodes=2"], "It would stay pending forever. Fix: fewer nodes"),
])
def test_request_the_partition_cannot_hold_is_refused_before_sbatch(slurm_cluster, tmp_path, overrides, message):  # noqa: F811
    run_dir = tmp_path / "run"
    proc = optmodel(*SLURM, *QUICK, *overrides, f"hydra.run.dir={run_dir}", timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "partition debug (1 node(s)" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 2, proc.stderr  # head + 1 problem
    assert not run_dir.exists(), "no run dir left behind for a refused run"
    assert "-> slurm job" not in proc.stdout


@pytest.mark.parametrize("overrides, message", [
    (["hydra.launcher.partition=debgu"], "hydra.launcher.partition: no Slurm partition named 'debgu'. Did you mean debug?"),
    (["hydra.launcher.timeout_min=0"], "hydra.launcher.timeout_min: must be >= 1, got 0"),
])
def test_an_unknown_partition_or_a_zero_limit_is_refused_before_sbatch(slurm_cluster, tmp_path, overrides, message):  # noqa: F811
    run_dir = tmp_path / "run"
    launcher = [a for a in SLURM if not any(a.split("=")[0] == o.split("=")[0] for o in overrides)]
    proc = optmodel(*launcher, *QUICK, *overrides, f"hydra.run.dir={run_dir}", timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not run_dir.exists() and "-> slurm job" not in proc.stdout
