"""What a run leaves in its dir whatever way it ends: no lock, no temp file, paths that
still resolve after the dir moves."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from optmodel.claim import LOCK_NAME, claim_run_dir
from optmodel.facts.errors import ConfigError
from optmodel.launch import signals
from optmodel.manifest import atomic_file, atomic_write_text
from optmodel.facts.rundir import read_manifest
from optmodel.facts.rundir import read_origin

from conftest import compose_cfg


def test_the_lock_goes_with_the_run_and_the_dir_can_be_claimed_again(tmp_path):
    held = claim_run_dir(tmp_path, "quantize")
    assert (tmp_path / LOCK_NAME).is_file()
    with pytest.raises(ConfigError, match="is in use by a run that is still going"):
        claim_run_dir(tmp_path, "quantize")
    held.release()
    assert not (tmp_path / LOCK_NAME).exists()
    claim_run_dir(tmp_path, "quantize").release()
    assert os.listdir(tmp_path) == []


def test_a_signal_inside_an_atomic_write_leaves_no_temp_file(tmp_path):
    """Manifest updates, config.yaml and prune scores all write through atomic_file."""
    previous = signals.install()
    try:
        with pytest.raises(signals.Terminated), atomic_file(tmp_path / "optmodel.json") as tmp:
            tmp.write_text('{"status": "runn')  # half written when the kill lands
            signal.raise_signal(signal.SIGTERM)
    finally:
        signals.restore(previous)
    assert os.listdir(tmp_path) == []
    atomic_write_text(tmp_path / "optmodel.json", "{}")
    assert os.listdir(tmp_path) == ["optmodel.json"]


# --- run dirs that move ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory, one_thread):
    from optmodel.run import execute

    run_dir = tmp_path_factory.mktemp("moves") / "scratch" / "run"
    execute(compose_cfg("task.quant_cfg=INT8_DEFAULT_CFG", "task.export=false", "task.perplexity=false",
                        "data.num_samples=2", "data.seq_len=32", "data.batch_size=2"), run_dir)
    return run_dir


def test_outputs_are_recorded_relative_to_the_run_dir(quantized_run):
    raw = json.loads((quantized_run / "optmodel.json").read_text())
    assert raw["outputs"]["saved_model"] == "quantized"
    assert read_manifest(quantized_run)["outputs"]["saved_model"] == str(quantized_run / "quantized")


def test_a_moved_run_dir_loads_from_where_it_is_and_a_copy_loads_its_own_files(quantized_run, tmp_path):
    from optmodel.backends import load
    from optmodel.facts.rundir import run_dir_problems

    moved = tmp_path / "project" / "run"
    shutil.copytree(quantized_run.parent, tmp_path / "project")  # a copy whose original is then gone:
    original = quantized_run.parent.rename(quantized_run.parent.with_name("gone"))
    try:
        assert run_dir_problems(str(moved)) == []
        handle = load(compose_cfg(f"run.load={moved}"))
        assert handle.source == moved / "quantized" and handle.origin["quantization"]["format"] == "INT8_DEFAULT_CFG"
    finally:
        original.rename(quantized_run.parent)
    copy = tmp_path / "copy"  # the original still there: the copy reads its own files
    shutil.copytree(quantized_run, copy)
    assert read_manifest(copy)["outputs"]["saved_model"] == str(copy / "quantized")


def test_an_older_manifest_with_absolute_paths_resolves_inside_the_moved_dir(quantized_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(quantized_run, old)
    made_in = "/scratch/user/runs/q1"  # where that run was made, as Hydra recorded it
    (old / ".hydra").mkdir()
    (old / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    output_dir: {made_in}\n")
    data = json.loads((old / "optmodel.json").read_text())
    data["outputs"] = {"saved_model": f"{made_in}/quantized", "elsewhere": "/ckpt/base", "export_format": "hf"}
    (old / "optmodel.json").write_text(json.dumps(data))
    assert read_origin(str(old))["outputs"] == {"saved_model": str(old / "quantized"), "elsewhere": "/ckpt/base",
                                                "export_format": "hf"}
