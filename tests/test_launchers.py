"""Launchers and sweeps: local ranks forming one gloo world, Slurm sbatch scripts through the
real submitit code path (with a stand-in sbatch), quantization sweeps with their summary,
resume, failures, fail-fast, and submitit's checkpoint / requeue protocol."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from optmodel.launch import preemption, resources
from optmodel.launch.summary import collect_rows, write_summary
from optmodel.manifest import Manifest
from optmodel.facts.rundir import read_manifest
from optmodel.facts.paths import CORPUS_DIR, conf_dir

from conftest import compose_cfg
from slurm_cluster import await_true

QUICK = ["task.export=false", "data.num_samples=4", "data.eval_max_sequences=4", "data.seq_len=64"]
FORMATS = ["FP8_DEFAULT_CFG", "INT8_SMOOTHQUANT_CFG", "INT4_AWQ_CFG"]


def optmodel(*args: str, env=None, timeout=600) -> subprocess.CompletedProcess:
    """The installed command, run outside the checkout (its hydra_plugins/ is not in the cwd)."""
    return subprocess.run([sys.executable, "-m", "optmodel", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd="/")


def hydra_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


# -- presets and allocation ------------------------------------------------------------

def test_launchers_are_discovered_by_hydra(tmp_path):
    """(That they ship in the wheel: test_quantize_run.py's wheel test, one build of the checkout.)"""
    code = ("import optmodel\nfrom hydra.core.plugins import Plugins\nfrom hydra.plugins.launcher import Launcher\n"
            "print(sorted(c.__name__ for c in Plugins.instance().discover(Launcher)))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    for name in ("OptmodelLocalLauncher", "OptmodelLocalRanksLauncher", "OptmodelSlurmLauncher"):
        assert name in found.stdout


def test_default_launcher_is_local_and_slurm_preset_carries_nccl_defaults():
    assert hydra_cfg().hydra.launcher._target_.endswith("OptmodelLocalLauncher")
    launcher = hydra_cfg("hydra/launcher=slurm_h100", "+hydra.launcher.env.MY_FLAG=on").hydra.launcher
    assert launcher._target_.endswith("OptmodelSlurmLauncher")
    # Whole nodes (exclusive, all memory) are decided per job: only a job taking all GPUs gets them.
    assert (launcher.gpus_per_node, launcher.mem, launcher.exclusive) == (8, None, None)
    assert launcher.env.NCCL_IB_TIMEOUT == "22" and launcher.env.CUDA_DEVICE_MAX_CONNECTIONS == "1"
    assert launcher.env.MY_FLAG == "on"  # any variable, not a fixed set


def test_misspelt_launcher_field_fails_at_composition():
    with pytest.raises(Exception, match="nodez"):
        hydra_cfg("hydra/launcher=slurm", "hydra.launcher.nodez=2")


@pytest.mark.parametrize(
    "parallel, nodes, expected",
    [("single", None, (1, 1)), ("tp2", None, (1, 2)), ("tp8", None, (1, 8)), ("pp16_kimi", None, (2, 8)),
     ("kimi_k2", None, (8, 8)), ("single", 2, (2, 8))],
)
def test_node_count_derives_from_parallel_sizes(parallel, nodes, expected):
    par = compose_cfg(f"parallel={parallel}").parallel
    alloc = resources.allocation(par, gpus_per_node=8, nodes=nodes)
    assert (alloc.nodes, alloc.tasks_per_node) == expected


def test_container_mounts_must_cover_the_run_dirs():
    assert resources.container_mount_problems("img", "/lustre:/lustre", ["/lustre/runs/a", "/lustre/runs/a/0"]) == []
    problems = resources.container_mount_problems("img", "/data:/mnt", ["/data/runs", "/data/runs/0"])
    assert len(problems) == 1 and "hydra.launcher.container_mounts=/data:/data" in problems[0]
    assert resources.container_mount_problems(None, None, ["/anywhere"]) == []


# -- Slurm through submitit, with a stand-in sbatch ------------------------------------

@pytest.fixture
def fake_slurm(tmp_path):
    """tests/slurm_standin/ on PATH: sbatch records each script and prints a job id (and, with
    FAKE_SLURM_RUN=1, runs it here as a one-node job), srun starts one process per task,
    sacct reports the job's state, scancel records cancellations."""
    record = tmp_path / "slurm_record"
    record.mkdir()
    env = {"PATH": f"{Path(__file__).parent / 'slurm_standin'}:{os.environ['PATH']}", "FAKE_SLURM_RECORD": str(record)}
    return env, record


def test_plain_run_submits_a_2x8_sbatch_script_and_returns(fake_slurm, tmp_path):
    env, record = fake_slurm
    run_dir = tmp_path / "run"
    proc = optmodel(
        "hydra/launcher=slurm_h100", "hydra.launcher.nodes=2", "hydra.launcher.wait=false",
        "hydra.launcher.timeout_min=90", "hydra.launcher.partition=batch", "hydra.launcher.account=llm",
        "hydra.launcher.container_image=nvcr.io/nvidia/pytorch:25.01-py3",
        f"hydra.launcher.container_mounts={tmp_path}:{tmp_path}", "hydra.launcher.container_workdir=/workspace",
        "hydra.launcher.setup=[module load cuda/12.8]", "+hydra.launcher.env.HF_HOME=/lustre/hf",
        f"hydra.run.dir={run_dir}", env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    scripts = sorted(record.glob("script_*.sh"))
    assert len(scripts) == 1, "one plain run = one sbatch"
    script = scripts[0].read_text()
    for line in ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --time=90", "#SBATCH --mem=0", "#SBATCH --exclusive", "#SBATCH --partition=batch",
                 "#SBATCH --account=llm", "#SBATCH --signal=USR2@120", "module load cuda/12.8",
                 "export HF_HOME=/lustre/hf", "export NCCL_IB_TIMEOUT=22", "export CUDA_DEVICE_MAX_CONNECTIONS=1"]:
        assert line in script.splitlines(), f"{line!r} missing from\n{script}"
    srun = next(l for l in script.splitlines() if l.startswith("srun "))
    assert "--container-image=nvcr.io/nvidia/pytorch:25.01-py3" in srun
    assert f"--container-mounts={tmp_path}:{tmp_path}" in srun and "--container-workdir=/workspace" in srun
    assert srun.endswith(f"python -u -m submitit.core._submit {run_dir}/.submitit/%j")  # the container's python
    # Returned after scheduling, saying which job and where its log goes.
    assert "slurm job 4242 (2 node(s) x 8 rank(s))" in proc.stdout
    assert f"log {run_dir}/.submitit/4242/4242_0_log.out" in proc.stdout
    # A plain run's dir holds the run only: its job record sits with submitit's files.
    assert not (run_dir / "sweep.json").exists() and not (run_dir / "multirun.yaml").exists()
    job = json.loads((run_dir / ".submitit" / "sweep.json").read_text())["jobs"][0]
    assert (job["state"], job["job_id"], job["run_dir"]) == ("submitted", "4242", str(run_dir))
    assert f"python -m optmodel.launch.summary {run_dir}" in proc.stdout
    state = subprocess.run([sys.executable, "-m", "optmodel.launch.summary", str(run_dir)], capture_output=True,
                           text=True, timeout=120, env={**os.environ, **env})
    assert state.stdout.strip() == "slurm job 4242: running" and state.returncode == 1, state.stderr[-2000:]
    assert not list(run_dir.glob("summary.*")), "a plain run's dir gets no sweep summary"


def test_sweep_submits_one_job_per_value_and_refuses_a_layout_that_does_not_fit(fake_slurm, tmp_path):
    env, record = fake_slurm
    proc = optmodel("-m", "task.quant_cfg=FP8_DEFAULT_CFG,INT4_AWQ_CFG", "hydra/launcher=slurm",
                    "hydra.launcher.wait=false", f"hydra.sweep.dir={tmp_path / 'sweep'}", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(record.glob("script_*.sh"))) == 2
    # A one-rank hf layout on an 8-GPU preset asks for one task, not a whole node of them.
    assert "#SBATCH --ntasks-per-node=1" in (record / "script_0.sh").read_text().splitlines()

    bad = optmodel("-m", "hydra/launcher=slurm", "parallel=tp2", "hydra.launcher.wait=false",
                   f"hydra.sweep.dir={tmp_path / 'bad'}", env=env, timeout=120)
    assert bad.returncode != 0
    assert "job 0 (parallel=tp2) on 1 node(s) x 2 task(s)" in bad.stderr and "backend=hf" in bad.stderr
    assert len(list(record.glob("script_*.sh"))) == 2, "nothing submitted for a refused sweep"


def test_slurm_tasks_form_one_world_through_the_generated_script(fake_slurm, tmp_path):
    """The sbatch script submitit wrote, run by stand-in sbatch/srun: 2 tasks = 2 ranks, one run dir,
    and the submitting command waits for the job (hydra.launcher.wait defaults to true)."""
    env, record = fake_slurm
    run_dir = tmp_path / "run"
    proc = optmodel("hydra/launcher=slurm", "hydra.launcher.nodes=1", "hydra.launcher.tasks_per_node=2",
                    "hydra.launcher.gpus_per_node=null", "task.export=false", "task.perplexity=false",
                    "data.num_samples=2", "data.seq_len=64", f"hydra.run.dir={run_dir}",
                    env={**env, "FAKE_SLURM_RUN": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "completed"
    ranks = manifest["world"]["ranks"]
    assert [(r["rank"], r["world_size"], r["backend"], r["launcher"]) for r in ranks] == [
        (0, 2, "gloo", "submitit-slurm"), (1, 2, "gloo", "submitit-slurm")]
    assert {r["run_dir"] for r in ranks} == {str(run_dir)}
    assert (run_dir / ".submitit" / "4242" / "4242_1_log.out").is_file(), "rank 1 logged where srun put it"
    assert json.loads((run_dir / ".submitit" / "sweep.json").read_text())["jobs"][0]["state"] == "completed"
    assert re.search(r"job 0 completed: .*effective_bits=\d", proc.stdout), "rank 0's summary printed"


def test_failed_slurm_job_is_one_line_without_hydras_traceback(fake_slurm, tmp_path):
    env, _ = fake_slurm
    run_dir = tmp_path / "run"
    proc = optmodel("hydra/launcher=slurm", "model.checkpoint=/nonexistent/ckpt", f"hydra.run.dir={run_dir}",
                    env={**env, "FAKE_SLURM_RUN": "1"}, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: job 0 failed: rank 0: ConfigError"), proc.stderr[-3000:]
    assert "/nonexistent/ckpt" in proc.stderr


# -- local ranks: one gloo world, one run dir --------------------------------------------

def test_local_ranks_form_one_gloo_world_writing_one_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    proc = optmodel("hydra/launcher=local_ranks", "hydra.launcher.tasks_per_node=2", "task.export=false",
                    "task.perplexity=false", "data.num_samples=2", "data.seq_len=64", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "completed"
    ranks = manifest["world"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)
    assert {r["run_dir"] for r in ranks} == {str(run_dir)}
    assert len({r["pid"] for r in ranks}) == 2, "two processes"
    # One run dir: rank 0's config, manifest and .hydra; rank 1 logs beside them.
    assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "optmodel.rank1.log").is_file()
    assert not [p for p in run_dir.parent.iterdir() if p.name != "run"], "no second run dir"


def test_rank_other_than_0_writes_no_manifest(tmp_path):
    manifest = Manifest(tmp_path, task="quantize", model="tiny_qwen3", input_checkpoint=None, persist=False)
    manifest.finish("completed")
    assert not list(tmp_path.iterdir())


# -- sweeps: summary, resume, failures -------------------------------------------------

@pytest.fixture(scope="module")
def quant_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("quant_sweep")
    args = ["-m", f"task.quant_cfg={','.join(FORMATS)}", *QUICK, f"hydra.sweep.dir={sweep_dir}"]
    start = time.perf_counter()
    first = optmodel(*args)
    seconds = time.perf_counter() - start
    assert first.returncode == 0, first.stderr[-3000:]
    stamps = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/optmodel.json")}
    start = time.perf_counter()
    second = optmodel(*args)
    rerun_seconds = time.perf_counter() - start
    print(f"3-format sweep: {seconds:.1f} s; resumed re-run: {rerun_seconds:.1f} s")
    return sweep_dir, first, second, stamps


def test_quant_sweep_writes_summary_table_csv_and_plot(quant_sweep):
    sweep_dir, first, _, _ = quant_sweep
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert sorted(r["format"] for r in rows) == sorted(FORMATS)
    assert all(r["status"] == "completed" for r in rows)
    for r in rows:
        manifest = read_manifest(Path(r["run_dir"]))
        assert float(r["perplexity_after"]) == manifest["metrics"]["perplexity_after"]
        assert 1 < float(r["perplexity_after"]) < 30
    table = (sweep_dir / "summary.md").read_text()
    assert table.splitlines()[0].startswith("| job | overrides | format | status | ")
    assert all(f"| {fmt} | completed |" in table for fmt in FORMATS)
    assert "3 of 3 job(s) completed." in table
    assert (sweep_dir / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"sweep summary: {sweep_dir / 'summary.md'}" in first.stdout


def test_rerunning_a_completed_sweep_runs_zero_jobs(quant_sweep):
    sweep_dir, _, second, stamps = quant_sweep
    assert second.returncode == 0, second.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/optmodel.json")} == stamps, "a job ran again"
    jobs = json.loads((sweep_dir / "sweep.json").read_text())["jobs"]
    assert [j["state"] for j in jobs] == ["skipped"] * 3
    assert "optmodel quantize:" not in second.stdout


def test_resume_refuses_a_sweep_dir_holding_other_runs(quant_sweep):
    sweep_dir, _, _, _ = quant_sweep
    proc = optmodel("-m", "task.quant_cfg=W4A8_AWQ_BETA_CFG", *QUICK, f"hydra.sweep.dir={sweep_dir}", timeout=120)
    assert proc.returncode != 0
    assert "holds a completed run with other overrides" in proc.stderr and "hydra.sweep.dir" in proc.stderr


def _short_text(tmp_path):
    """~150 tokens: data.seq_len=512 fails when packing (after loading, not at validation)."""
    short = tmp_path / "short.txt"
    short.write_text((CORPUS_DIR / "heldout.txt").read_text()[:600])
    return ["data=text", f"data.calib_path={short}", f"data.eval_path={short}"]


def test_failed_job_is_listed_with_its_error_and_the_others_summarized(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = optmodel("-m", *_short_text(tmp_path), "data.seq_len=512,64", "task.export=false", "task.perplexity=false",
                    "data.num_samples=1", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode != 0, "a sweep with a failed job does not exit 0"
    rows = {r["job"]: r for r in collect_rows(sweep_dir)}
    assert rows[0]["status"] == "failed" and "fewer than one sequence of data.seq_len=512" in rows[0]["error"]
    assert rows[1]["status"] == "completed" and rows[1]["metrics"]["calib_tokens"] == 64
    assert "1 of 2 job(s) completed." in (sweep_dir / "summary.md").read_text()
    assert proc.stdout.count("launching job ") == 2

    # Resume: the failed job runs again (and fails again: same data), the completed one is skipped.
    failed_before, done = read_manifest(sweep_dir / "0"), (sweep_dir / "1" / "optmodel.json").read_bytes()
    again = optmodel("-m", *_short_text(tmp_path), "data.seq_len=512,64", "task.export=false", "task.perplexity=false",
                     "data.num_samples=1", f"hydra.sweep.dir={sweep_dir}")
    assert again.returncode != 0
    assert again.stdout.count("launching job ") == 1 and "launching job 0: " in again.stdout, "exactly job 0 ran"
    assert re.search(r"job 1 \(.*\) already completed in .*: skipped", again.stdout)
    assert [j["state"] for j in json.loads((sweep_dir / "sweep.json").read_text())["jobs"]] == ["failed", "skipped"]
    rerun = read_manifest(sweep_dir / "0")
    assert rerun["status"] == "failed" and (rerun["pid"], rerun["started_at"]) != (failed_before["pid"], failed_before["started_at"])
    assert (sweep_dir / "1" / "optmodel.json").read_bytes() == done, "the completed job did not run again"


def test_fail_fast_stops_the_sweep_at_the_first_failure(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = optmodel("-m", *_short_text(tmp_path), "data.seq_len=512,64", "hydra.launcher.fail_fast=true",
                    f"hydra.sweep.dir={sweep_dir}", timeout=300)
    assert proc.returncode != 0
    jobs = json.loads((sweep_dir / "sweep.json").read_text())["jobs"]
    assert [j["state"] for j in jobs] == ["failed", "not run"]
    assert not (sweep_dir / "1").exists(), "the second job never started"
    assert "| not run |" in (sweep_dir / "summary.md").read_text()


def test_a_sweep_with_a_bad_job_is_refused_before_the_first_job_starts(tmp_path):
    proc = optmodel("-m", "data.seq_len=128,100000", f"hydra.sweep.dir={tmp_path / 'sweep'}", timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "job 1 (data.seq_len=100000): data.seq_len: 100000 exceeds" in proc.stderr
    assert not (tmp_path / "sweep" / "0").exists(), "job 0 never ran"


def test_fail_fast_cancels_running_rank_jobs_at_the_first_failure(tmp_path):
    """The submitit launchers run jobs side by side: fail_fast cancels the ones still running.
    Job 1 is held at its start (a Hydra callback) until a release file this test never writes,
    so it is surely running when job 0 fails."""
    sweep_dir = tmp_path / "sweep"
    release = tmp_path / "release"
    hold = ["+hydra.callbacks.hold._target_=launch_holds.HoldUntilReleased", "+hydra.callbacks.hold.key=data.seq_len",
            "+hydra.callbacks.hold.value=16", f"+hydra.callbacks.hold.release={release}"]
    # seq_len=512 fails when packing (after loading); seq_len=16 is held.
    proc = optmodel("-m", *_short_text(tmp_path), "data.seq_len=512,16", "hydra/launcher=local_ranks",
                    "hydra.launcher.fail_fast=true", "task.export=false", *hold, f"hydra.sweep.dir={sweep_dir}",
                    env={"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode != 0
    jobs = json.loads((sweep_dir / "sweep.json").read_text())["jobs"]
    assert jobs[0]["state"] == "failed" and "fewer than one sequence of data.seq_len=512" in jobs[0]["error"], jobs
    assert jobs[1]["state"] == "not run" and "cancelled: fail_fast after job 0 failed" in jobs[1]["error"]
    assert not (sweep_dir / "1" / "optmodel.json").exists(), "the held job never reached its task"
    row = next(line for line in (sweep_dir / "summary.md").read_text().splitlines() if line.startswith("| 1 |"))
    assert "| not run |" in row and "| cancelled: fail_fast after job 0 failed |" in row
    assert not release.exists()


def test_summary_sorts_by_effective_bits_and_keeps_formats_without_them(tmp_path):
    """effective_bits / mmlu come from other tasks' manifests: read whatever metrics exist."""
    for num, (fmt, metrics) in enumerate([
        ("FP8_DEFAULT_CFG", {"effective_bits": 8.0, "perplexity_after": 4.3, "mmlu_after": 0.61}),
        ("NVFP4_DEFAULT_CFG", {"effective_bits": 4.5, "perplexity_after": 4.6, "mmlu_after": 0.58}),
        ("INT8_SMOOTHQUANT_CFG", {"perplexity_after": 4.4}),
    ]):
        run = tmp_path / str(num)
        run.mkdir()
        (run / "optmodel.json").write_text(json.dumps(
            {"status": "completed", "quantization": {"format": fmt}, "metrics": metrics, "error": None}))
    paths = write_summary(tmp_path)
    assert [r["format"] for r in csv.DictReader(paths[0].open())] == [
        "NVFP4_DEFAULT_CFG", "FP8_DEFAULT_CFG", "INT8_SMOOTHQUANT_CFG"]
    header = paths[1].read_text().splitlines()[0]
    assert "effective_bits" in header and "mmlu_after" in header
    assert paths[2].stat().st_size > 1000


# -- preemption: submitit's checkpoint / requeue protocol ---------------------------------

class CountingTask:
    """A resumable stand-in for a training loop: counts to `steps`, saving progress on preemption.

    The first attempt stops at `hold_at`, writes its pid to `<state>.held` and waits there for
    the signal (no step depends on how fast the machine is); a requeued attempt runs through."""

    def __init__(self, state: str, steps: int, hold_at: int, resumable: bool = True):
        self.state, self.steps, self.hold_at, self.resumable = Path(state), steps, hold_at, resumable

    def __call__(self):
        import signal as sig

        preemption.remember_submitit_handler(sig.getsignal(sig.SIGUSR2))
        start = int(self.state.read_text()) if self.state.exists() else 0
        step = start
        save = lambda: self.state.write_text(str(step))  # noqa: E731
        with preemption.resumable(save) if self.resumable else _nothing():
            while step < self.steps:
                if step == self.hold_at and start == 0:
                    Path(f"{self.state}.pid").write_text(str(os.getpid()))
                    Path(f"{self.state}.pid").replace(f"{self.state}.held")  # whole, when seen
                    deadline = time.monotonic() + 600  # never left behind if the test is gone
                    while time.monotonic() < deadline:  # submitit's USR2 handler exits or raises in here
                        time.sleep(1)
                    raise TimeoutError("no USR2 within 600 s")
                step += 1
        return {"resumed_from": start, "steps": step}

    def checkpoint(self, *args, **kwargs):
        return preemption.checkpoint_submission(self, *args, **kwargs)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@pytest.fixture
def local_executor(tmp_path):
    import cloudpickle
    import submitit

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit", max_num_timeout=2)
    # submitit's handler counts USR2 as a time-out once the job ran min(0.8 x limit, limit - 10 min):
    # at a 10 min limit, always. signal_delay_s=0: the controller never sends USR2 itself, the test does.
    executor.update_parameters(timeout_min=10, signal_delay_s=0)
    return executor


def _interrupt_when_held(job, state: Path) -> None:
    """USR2 to the task once it waits at its hold step: what submitit's controller forwards to
    its tasks `signal_delay_s` before the time limit."""
    held = Path(f"{state}.held")
    await_true("the task holding for the signal", lambda: held.is_file() or job.done(), 300, 0.05)
    assert not job.done(), job.stderr()
    os.kill(int(held.read_text()), signal.SIGUSR2)


def test_resumable_task_is_checkpointed_and_requeued_on_timeout(local_executor, tmp_path):
    state = tmp_path / "step"
    job = local_executor.submit(CountingTask(str(state), steps=60, hold_at=25))
    _interrupt_when_held(job, state)
    assert job.result() == {"resumed_from": 25, "steps": 60}, "the requeued job continued from the saved step"
    # Counted as one of max_num_timeout=2 time-outs: one left.
    assert "this job is timed-out" in job.stderr() and f"Requeued job {job.job_id} (1 remaining timeouts)" in job.stdout()


def test_task_that_is_not_resumable_is_not_requeued(local_executor, tmp_path):
    state = tmp_path / "step"
    job = local_executor.submit(CountingTask(str(state), steps=60, hold_at=25, resumable=False))
    _interrupt_when_held(job, state)
    with pytest.raises(Exception, match="checkpoint function returned None"):
        job.result()
    assert not state.exists()


def test_launcher_checkpoint_resubmits_itself_only_for_resumable_work(monkeypatch):
    monkeypatch.setattr(preemption, "_requeued", False)  # restored after the test
    from hydra_plugins.optmodel_launchers.launchers import OptmodelSlurmLauncher

    launcher = OptmodelSlurmLauncher(submitit_folder="/tmp/x")
    assert launcher.checkpoint(["task.quant_cfg=FP8_DEFAULT_CFG"], "hydra.sweep.dir", 0, "id", {}) is None
    saved = []
    with preemption.resumable(lambda: saved.append(True)):
        delayed = launcher.checkpoint(["task.quant_cfg=FP8_DEFAULT_CFG"], "hydra.sweep.dir", 0, "id", {})
    assert delayed.function is launcher and delayed.args[0] == ["task.quant_cfg=FP8_DEFAULT_CFG"]
    assert saved == [True] and preemption.was_requeued()


def test_run_saved_for_a_requeue_is_marked_requeued_not_failed(tmp_path, monkeypatch):
    """What submitit does on USR2 inside a resumable task: checkpoint (save), requeue, exit."""
    import optmodel.run as run_module

    monkeypatch.setattr(preemption, "_requeued", False)

    def resumable_task(ctx):
        with preemption.resumable(lambda: (ctx.run_dir / "state.txt").write_text("step 3")):
            assert preemption.checkpoint_submission(lambda: None) is not None
            raise SystemExit(-1)  # submitit exits the job after `scontrol requeue`

    monkeypatch.setattr(run_module, "task_runner", lambda name: resumable_task)
    with pytest.raises(SystemExit):
        run_module.execute(compose_cfg(), tmp_path)
    assert read_manifest(tmp_path)["status"] == "requeued"
    assert (tmp_path / "state.txt").read_text() == "step 3"


def test_sigterm_inside_resumable_work_goes_to_submitits_requeue_handler():
    calls = []
    preemption.remember_submitit_handler(lambda signum, frame: calls.append(signum))
    before = signal.getsignal(signal.SIGTERM)
    try:
        with preemption.resumable(lambda: None):
            signal.raise_signal(signal.SIGTERM)  # handled in this thread before it returns
        assert calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) == before, "the previous SIGTERM handler is back"
    finally:
        preemption.remember_submitit_handler(None)
