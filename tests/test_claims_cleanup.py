"""Partial outputs are removed on every way a run stops: an error, Ctrl-C (KeyboardInterrupt)
and SystemExit (a SIGTERM handler's exit, a requeue) — in process, no timing (issue 20)."""

from __future__ import annotations

import pytest

from optmodel.manifest import atomic_dir


@pytest.mark.parametrize("stop", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(143)],
                         ids=["error", "ctrl-c", "system-exit"])
def test_atomic_dir_leaves_nothing_when_stopped(stop, tmp_path):
    with pytest.raises(type(stop)):
        with atomic_dir(tmp_path / "export") as partial:
            (partial / "model.safetensors").write_bytes(b"half")
            assert partial.is_dir() and partial.name.startswith(".export.partial-")
            raise stop
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_syncs_and_renames_when_done_for_one_rank_or_all(tmp_path):
    for name, all_ranks in (("quantized", False), ("checkpoint-5", True)):  # no world: all_ranks is rank 0 alone
        with atomic_dir(tmp_path / name, all_ranks=all_ranks) as partial:
            (partial / "weights.bin").write_bytes(b"done")
        assert (tmp_path / name / "weights.bin").read_bytes() == b"done"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5", "quantized"]
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        with atomic_dir(tmp_path / "quantized"):
            pass


def test_claiming_the_run_dir_again_removes_what_a_killed_run_left_half_written(tmp_path):
    import os
    import subprocess
    import sys

    from optmodel.claim import claim_run_dir

    run = tmp_path / "run"
    killed = ("import os, signal, sys; from pathlib import Path; from optmodel.manifest import atomic_dir\n"
              "run = Path(sys.argv[1])\n"
              "with atomic_dir(run / 'export'), atomic_dir(run / 'checkpoints' / 'checkpoint-5', all_ranks=True) as p:\n"
              "    (p / 'shard.distcp').write_bytes(b'half')\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    (run / "checkpoints").mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", killed, str(run)])
    assert proc.wait(timeout=120) == -9
    left = {f".export.partial-{proc.pid}", f"checkpoints/.checkpoint-5.partial-{proc.pid}"}
    assert {str(p.relative_to(run)) for p in run.rglob("*partial*")} == left
    live = run / "checkpoints" / f".checkpoint-7.partial-{os.getpid()}"  # a writer still at work: kept
    live.mkdir()
    claim_run_dir(run, "distill", resume=True).release()
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*partial*")) == [str(live.relative_to(run))]
