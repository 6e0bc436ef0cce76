"""Several ranks, one run: the run dir rank 0 resolved is the one every rank writes to, and one
rank failing ends the job's other ranks instead of leaving them waiting for it."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from optmodel.launch.sweep import SweepJob
from optmodel.launch.watch import Watcher
from optmodel.facts.rundir import read_manifest

from slurm_cluster import await_true


def _rank_run(rank: int, world: int, port: int, base: str) -> None:
    """One rank of a bare launch (torchrun-style variables) that resolved its own run dir, as a
    `${now:}` dir resolved per process would; the task records the dir it was given."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), HF_HUB_OFFLINE="1")
    import optmodel.run as run_module
    from conftest import compose_cfg
    from optmodel.distributed import destroy_world

    log = logging.getLogger("optmodel")
    log.addHandler(logging.FileHandler(Path(base) / f"rank{rank}.log"))
    log.setLevel(logging.INFO)

    def task(ctx):
        Path(base, f"rank{rank}.json").write_text(json.dumps(str(ctx.run_dir)))
        return {}

    run_module.task_runner = lambda name: task
    try:
        run_module.execute(compose_cfg("run.world_size=2"), Path(base) / f"resolved_by_rank{rank}")
    finally:
        destroy_world()


def test_rank_0s_run_dir_wins_when_ranks_resolved_different_dirs(tmp_path):
    import torch.multiprocessing as mp

    from optmodel.distributed import free_port

    mp.spawn(_rank_run, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    chosen = tmp_path / "resolved_by_rank0"
    assert [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)] == [str(chosen)] * 2
    manifest = read_manifest(chosen)
    assert manifest["status"] == "completed" and [r["rank"] for r in manifest["world"]["ranks"]] == [0, 1]
    assert [r["run_dir"] for r in manifest["world"]["ranks"]] == [str(chosen), str(tmp_path / "resolved_by_rank1")]
    assert not (tmp_path / "resolved_by_rank1").exists(), "rank 1 wrote nothing into the dir it resolved"
    assert f"all use rank 0's {chosen}" in (tmp_path / "rank0.log").read_text()


class _RankThatFails:
    """Rank 1 fails at once; rank 0 waits for it, as in a collective, until `release` exists."""

    def __init__(self, release: str):
        self.release = Path(release)

    def __call__(self):
        import submitit

        if submitit.JobEnvironment().global_rank == 1:
            raise RuntimeError("rank 1 lost its device")
        Path(f"{self.release}.pid").write_text(str(os.getpid()))
        Path(f"{self.release}.pid").replace(f"{self.release}.rank0")
        deadline = time.monotonic() + 600  # never left behind if the test is gone
        while not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return "rank 0 finished"


def test_one_local_rank_failing_ends_the_other_ranks(tmp_path):
    """hydra/launcher=local_ranks's watcher on a real two-task submitit local job."""
    import cloudpickle
    import submitit

    from optmodel.facts.rundir import pid_alive

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=10, tasks_per_node=2)
    release = tmp_path / "release"
    sub = executor.submit(_RankThatFails(str(release)))
    job = SweepJob(num=0, overrides=[], run_dir=str(tmp_path / "run"))
    rank0 = Path(f"{release}.rank0")
    await_true("rank 0 waiting for rank 1", lambda: rank0.is_file() or sub.done(), 300, 0.05)
    Watcher(use_slurm=False, fail_fast=False).wait([(job, sub)])
    assert (job.state, job.error) == ("failed", "rank 1: RuntimeError: rank 1 lost its device")
    pid = int(rank0.read_text())
    await_true("rank 0 ended", lambda: sub.done() and pid_alive(pid, socket.gethostname()) is False, 120, 0.05)
    assert not release.exists()
