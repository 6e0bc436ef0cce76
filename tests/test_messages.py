"""Messages that point the right way: the fix offered is one the next run accepts, names are
the model's they describe, nothing on the console that is not about the run."""

from __future__ import annotations

import json
import logging

import pytest

from optmodel.claim import probe_run_dir
from optmodel.console import rate
from optmodel.facts.paths import TINY_MODELS_DIR
from optmodel.tasks.registry import task_spec

from conftest import compose_cfg


@pytest.mark.parametrize("task, offers_resume", [("prune", False), ("quantize", False), ("eagle3", True), ("distill", True)])
def test_a_used_dir_offers_run_resume_only_to_a_task_that_resumes(tmp_path, task, offers_resume):
    (tmp_path / "optmodel.json").write_text(json.dumps({"task": task, "model": "tiny_qwen3", "status": "failed"}))
    problem, = probe_run_dir(tmp_path, task, resumable=task_spec(task).resumable)
    assert problem.startswith(f"run.output_dir: {tmp_path} already holds a failed {task} run")
    assert ("run.resume=true" in problem) == offers_resume
    (tmp_path / "optmodel.json").write_text(json.dumps({"task": task, "model": "m", "status": "interrupted"}))
    assert "already holds an interrupted" in probe_run_dir(tmp_path, "generate")[0]


def test_rates_below_one_are_not_printed_as_zero():
    assert rate(0.4213, "tokens/s") == "0.421 tokens/s"
    assert rate(12.345, "tokens/s") == "12.3 tokens/s"
    assert rate(15234.7, "tokens/s") == "15,235 tokens/s"


def test_lm_eval_s_git_lookup_prints_nothing_outside_a_checkout(tmp_path, monkeypatch, capfd):
    import lm_eval.evaluator as evaluator

    from optmodel.evaluation.harness import _quiet_git_hash

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # tmp_path is in no checkout
    with _quiet_git_hash():
        assert evaluator.get_git_commit_hash() is None
    assert "fatal" not in capfd.readouterr().err


def test_a_second_model_is_logged_under_its_own_name(caplog, one_thread):
    from optmodel.backends import load

    with caplog.at_level(logging.INFO, logger="optmodel"):
        teacher = load(compose_cfg("model=tiny_qwen3"), source=TINY_MODELS_DIR / "tiny_llama")
    assert f"loading tiny_llama from {TINY_MODELS_DIR / 'tiny_llama'}" in caplog.text
    assert teacher.model.config.model_type == "llama"
