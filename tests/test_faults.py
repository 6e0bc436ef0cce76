"""Runs under faults and bad input: nothing mislabeled, nothing lost.

Each case runs the real entrypoint and asserts the exit code, that no traceback is shown,
the field the message names, and what the run dir holds afterwards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optmodel.claim import claim_run_dir, clean_stale_partials
from optmodel.facts.rundir import effective_status
from optmodel.facts.rundir import read_manifest
from optmodel.facts.paths import TINY_MODELS_DIR

SMALL = ["data.num_samples=2", "data.seq_len=64", "data.eval_max_sequences=2", "data.batch_size=2"]


def optmodel(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "optmodel", *args], capture_output=True, text=True, timeout=timeout)


def refused(proc, *needles):
    """Exit 2, one message, no traceback, every needle in it."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-2000:])


def copy_checkpoint(tmp_path, drop=()) -> Path:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(TINY_MODELS_DIR / "tiny_qwen3", ckpt)
    for name in drop:
        (ckpt / name).unlink()
    return ckpt


# --- checkpoints -------------------------------------------------------------------------------
def test_missing_tokenizer_is_refused_before_anything_runs(tmp_path):
    ckpt = copy_checkpoint(tmp_path, drop=("tokenizer.json", "tokenizer_config.json"))
    proc = optmodel(f"model.checkpoint={ckpt}", f"run.output_dir={tmp_path / 'run'}")
    refused(proc, "model.checkpoint:", "has no tokenizer")
    assert not (tmp_path / "run").exists()  # refused before Hydra creates the run dir


def test_a_tokenizer_of_another_model_is_refused(tmp_path):
    from optmodel.facts.checkpoint_files import tokenizer_problems

    ckpt = copy_checkpoint(tmp_path)
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    tok["added_tokens"].append({**tok["added_tokens"][-1], "id": 5000, "content": "<|extra|>"})
    (ckpt / "tokenizer.json").write_text(json.dumps(tok))
    problems = tokenizer_problems(ckpt, json.loads((ckpt / "config.json").read_text()), "model.checkpoint")
    assert problems and "produces ids up to 5000, past the model's vocab_size 1024" in problems[0]


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_corrupt_weights_are_refused_naming_the_file(tmp_path, damage):
    ckpt = copy_checkpoint(tmp_path)
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(4096)}[damage])
    proc = optmodel(f"model.checkpoint={ckpt}", f"run.output_dir={tmp_path / 'run'}")
    refused(proc, "model.checkpoint:", str(weights))
    assert not (tmp_path / "run" / "optmodel.json").exists()


def test_an_index_naming_missing_tensors_is_refused(tmp_path):
    from optmodel.facts.checkpoint_files import weight_problems

    ckpt = copy_checkpoint(tmp_path)
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.embed_tokens.weight": "model.safetensors", "model.not_there.weight": "model.safetensors",
                        "lm_head.weight": "model-00002-of-00002.safetensors"}}))
    problems = weight_problems(ckpt, json.loads((ckpt / "config.json").read_text()), "model.checkpoint")
    assert any("names shards that are not in" in p and "model-00002-of-00002.safetensors" in p for p in problems)
    assert any("names 1 tensors their shards do not hold (e.g. model.not_there.weight)" in p for p in problems)


# --- run dirs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("faults") / "done"
    proc = optmodel("task.quant_cfg=INT8_DEFAULT_CFG", f"run.output_dir={run_dir}", *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a run dir whose manifest points at the copy's own outputs."""
    shutil.copytree(run_dir, dest)
    manifest = (dest / "optmodel.json").read_text().replace(str(run_dir), str(dest))
    (dest / "optmodel.json").write_text(manifest)
    return dest


def test_rerun_into_a_used_dir_is_refused_and_keeps_the_earlier_record(finished_run):
    assert not (finished_run / ".optmodel.lock").exists()  # the lock goes with the run
    before = (finished_run / "optmodel.json").read_bytes()
    overrides = (finished_run / ".hydra" / "overrides.yaml").read_bytes()
    proc = optmodel("task.quant_cfg=FP8_DEFAULT_CFG", f"run.output_dir={finished_run}", *SMALL)
    refused(proc, "run.output_dir:", "already holds a completed quantize run", "run.output_dir=<a new dir>")
    assert "run.resume=true" not in proc.stderr  # quantize does not resume: no fix that is refused next
    assert (finished_run / "optmodel.json").read_bytes() == before
    proc = optmodel(f"run.output_dir={finished_run}", "run.resume=true", *SMALL)
    refused(proc, "run.output_dir:", "a completed run has nothing to continue")
    assert (finished_run / "optmodel.json").read_bytes() == before
    assert (finished_run / ".hydra" / "overrides.yaml").read_bytes() == overrides  # Hydra did not write there


def test_resume_is_refused_for_a_task_that_starts_over(tmp_path):
    refused(optmodel(f"run.output_dir={tmp_path / 'new'}", "run.resume=true", *SMALL), "run.resume: task=quantize does not resume")


def test_a_second_concurrent_run_into_one_dir_fails_at_once(tmp_path):
    holder = claim_run_dir(tmp_path / "busy", "quantize")  # a run holding the dir
    try:
        start = time.monotonic()
        proc = optmodel(f"run.output_dir={tmp_path / 'busy'}", *SMALL)
        refused(proc, "run.output_dir:", "is in use by a run that is still going", f"pid {os.getpid()}")
        assert time.monotonic() - start < 120  # refused at the start, not after the compute
        assert not (tmp_path / "busy" / "optmodel.json").exists()
    finally:
        holder.release()


def test_a_saved_quantized_model_without_its_modelopt_state_is_refused(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "copy")
    (run / "quantized" / "modelopt_state.pth").unlink()
    proc = optmodel("task=export", f"run.load={run}", f"run.output_dir={tmp_path / 'export'}")
    refused(proc, "run.load:", "holds no modelopt_state.pth")
    assert not (tmp_path / "export" / "optmodel.json").exists()


def test_a_truncated_saved_model_is_refused_naming_run_load(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "copy")
    weights = run / "quantized" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = optmodel("task=export", f"run.load={run}", f"run.output_dir={tmp_path / 'export'}")
    refused(proc, "run.load:", str(weights), "truncated")


def test_stale_partials_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".export.partial-{dead.pid}").mkdir()
    (tmp_path / f".quantized.partial-{os.getpid()}").mkdir()
    assert clean_stale_partials(tmp_path) == [f".export.partial-{dead.pid}"]
    assert (tmp_path / f".quantized.partial-{os.getpid()}").is_dir()


# --- the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize("override, field, fix", [
    ("parallel.ep=2", "parallel.ep:", "parallel.expert"),
    ("data.calib_size=0", "data.calib_size:", "data.num_samples"),
    ("+unknown_key=1", "unknown_key:", "adds a key that nothing reads"),
    ("task.subject=[astronomy]", "task.subject:", "task.subjects"),
])
def test_unknown_override_keys_get_the_real_field(override, field, fix, tmp_path):
    args = ["task=mmlu"] if override.startswith("task.") else []
    proc = optmodel(*args, override, f"run.output_dir={tmp_path / 'run'}")
    refused(proc, field, fix)
    assert not (tmp_path / "run").exists()


# --- signals and kills during a quantize run -----------------------------------------------------
def _start(run_dir: Path, *extra):
    return subprocess.Popen([sys.executable, "-m", "optmodel", f"run.output_dir={run_dir}", *SMALL, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, proc, what, timeout=600):
    """Poll for an event (a file, a manifest state); never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.05)


def _partial(run_dir: Path, name: str):
    return lambda: any(p.name.startswith(f".{name}.partial-") for p in run_dir.iterdir()) if run_dir.is_dir() else False


def _running(run_dir: Path):
    def check():
        try:
            return read_manifest(run_dir)["status"] == "running"
        except (OSError, ValueError, KeyError):
            return False
    return check


@pytest.mark.slow
@pytest.mark.parametrize("point", ["manifest written", "saving quantized/", "exporting"])
def test_killed_runs_never_look_complete_and_keep_what_finished(point, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    event = {"manifest written": _running(run_dir), "saving quantized/": _partial(run_dir, "quantized"),
             "exporting": _partial(run_dir, "export")}[point]
    _wait_for(event, proc, point)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "running" and effective_status(manifest) == "interrupted"
    saved = manifest["outputs"].get("saved_model")
    assert (run_dir / "quantized").exists() == (saved is not None)  # a final dir exists only when complete
    assert not (run_dir / "export").exists()
    before = (run_dir / "optmodel.json").read_bytes()
    refused(optmodel(f"run.output_dir={run_dir}", *SMALL), "already holds an interrupted quantize run")
    assert (run_dir / "optmodel.json").read_bytes() == before
    export = optmodel("task=export", f"run.load={run_dir}", f"run.output_dir={tmp_path / 'export'}")
    if saved:  # what finished before the kill stays usable
        assert export.returncode == 0, export.stderr[-3000:]
        assert (tmp_path / "export" / "export" / "hf_quant_config.json").is_file()
    else:
        refused(export, "run.load:", "status 'interrupted'", "recorded no finished model")


@pytest.mark.slow
def test_sigterm_during_export_fails_the_run_but_its_quantized_model_exports(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    _wait_for(_partial(run_dir, "export"), proc, "the export")
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    manifest = read_manifest(run_dir)
    assert proc.returncode == 128 + signal.SIGTERM and manifest["status"] == "failed" and "signal 15" in manifest["error"]
    assert "Traceback" not in output and "interrupted (signal 15, SIGTERM" in output  # one line, no traceback
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".") and p.name != ".hydra"] == []  # no lock, no temp file
    assert manifest["outputs"]["saved_model"] == str(run_dir / "quantized")
    assert not _partial(run_dir, "export")() and not (run_dir / "export").exists()
    export = optmodel("task=export", f"run.load={run_dir}", f"run.output_dir={tmp_path / 'export'}")
    assert export.returncode == 0, export.stderr[-3000:]


@pytest.mark.slow
def test_ctrl_c_is_recorded_as_interrupted(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    _wait_for(_running(run_dir), proc, "the manifest")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "failed" and manifest["error"] == "interrupted (Ctrl-C, SIGINT)"
    assert (run_dir / "optmodel.log").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
