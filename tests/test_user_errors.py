"""User errors: each is one message naming the field and the fix, exit 2, no traceback, and
no run dir (Hydra's .hydra/ and log included), found before anything loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from optmodel.facts.errors import ConfigError
from optmodel.checked import override_problems
from optmodel.checked import validate
from optmodel.facts.paths import TINY_MODELS_DIR

from conftest import compose_cfg


def optmodel(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "optmodel", *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def refused(proc, *needles):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-2000:])


# --- the command line: what Hydra would report with exit 1 -------------------------------------
@pytest.mark.parametrize("override, needle", [
    ("model=qwen3_8bb", "model: no config named 'qwen3_8bb'. Did you mean qwen3_8b"),
    ("task=quantise", "task: no config named 'quantise'. Did you mean quantize"),
    ("task=quantize,prunee", "task: no config named 'prunee'"),  # each choice of a sweep
    ("model.num_layers=four", "model.num_layers: 'four' is not an integer. Fix: model.num_layers=<an integer>"),
    ("task.auto_quantize.effective_bits=low", "task.auto_quantize.effective_bits: 'low' is not a number"),
    ("run.resume=maybe", "run.resume: 'maybe' is not true or false"),
    ("task.auto_quantize.bits=4.5", "Did you mean task.auto_quantize.effective_bits"),
    ("data.seq_len=[1,", "data.seq_len: `data.seq_len=[1,` cannot be parsed"),
])
def test_bad_overrides_are_named_before_hydra_composes(override, needle):
    problems = override_problems([override])
    assert len(problems) == 1 and needle in problems[0], problems


def test_good_overrides_pass():
    assert override_problems(["model=qwen3_8b", "task=quantize,prune", "model.num_layers=4,8", "run.seed=${run.seed}",
                              "task.auto_quantize.effective_bits=4", "run.world_size=null", "hydra/launcher=slurm"]) == []


RECIPE = """# @package _global_
defaults:
  - override /task: eagle3
task:
  seq_len: 64
{body}"""


@pytest.mark.parametrize("body, needle", [
    ("", None),  # a recipe of the user's own, beside conf/: accepted
    ("  lr: 1.0e-3\n", "task.lr (set in experiment/mine.yaml): task=eagle3 no longer has this option; it is "
                       "task.training.lr now. Fix: task.training.lr=<value>."),
    ("  training:\n    lrr: 1.0e-3\n", "task.training.lrr (set in experiment/mine.yaml): task.training.lrr is not a "
                                       "field of task=eagle3; the setting would be ignored or refused. Did you mean "
                                       "task.training.lr"),
    ("  acceptance:\n    draft_steps: many\n", "task.acceptance.draft_steps (set in experiment/mine.yaml): Value "
                                                "'many' of type 'str' could not be converted to Integer"),
])
def test_a_users_own_config_dir_is_checked_as_the_command_line_is(body, needle, tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(RECIPE.format(body=body))
    for where in (["--config-dir", str(tmp_path)], [f"hydra.searchpath=[file://{tmp_path}]"]):
        problems = override_problems([*where, "experiment=mine"])
        if needle is None:
            assert problems == []
        else:
            assert len(problems) == 1 and needle in problems[0], problems
    problems = override_problems(["-cd", str(tmp_path), "experiment=minee"])
    assert problems[0].startswith("experiment: no config named 'minee'. Did you mean mine?")
    assert "(conf/experiment/ or a dir given with --config-dir / hydra.searchpath holds" in problems[0]


def test_a_users_recipe_with_an_old_option_name_exits_2_before_any_run_dir(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(RECIPE.format(body="  max_steps: 10\n"))
    proc = optmodel("-cd", str(tmp_path), "experiment=mine", f"run.output_dir={tmp_path / 'run'}", cwd=tmp_path)
    refused(proc, "task.max_steps (set in experiment/mine.yaml): task=eagle3 no longer has this option; "
                  "it is task.training.max_steps now")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, needle", [
    (("model=qwen3_8bb",), "model: no config named"),  # composition: exit 2, not Hydra's 1
    ((f"model.checkpoint={TINY_MODELS_DIR}/missing",), "model.checkpoint:"),  # validation, after composition
])
def test_a_refused_run_exits_2_and_leaves_no_run_dir(args, needle, tmp_path):
    proc = optmodel(*args, f"run.output_dir={tmp_path / 'run'}", cwd=tmp_path)
    refused(proc, needle)
    assert not (tmp_path / "run").exists()
    proc = optmodel(*args, cwd=tmp_path)  # the default timestamped dir
    refused(proc, needle)
    assert not (tmp_path / "outputs").exists()


# --- inputs that load late ---------------------------------------------------------------------
def _scores_file(path, model="tiny_qwen3", fmt=1):
    import torch

    from optmodel.pruning.scores import shape_of

    shape = shape_of(OmegaConf.to_container(compose_cfg(f"model={model}").model))
    torch.save({"format": fmt, "shape": shape, "scores": {"hidden": torch.ones(4)}, "meta": {}}, path)
    return path


@pytest.mark.parametrize("damage, needle", [
    ("garbage", "is not a scores file (not a torch.save archive"),
    ("truncated", "is not a scores file (not a torch.save archive"),
    ("not_optmodel", "is not an optmodel prune scores file (format 7)"),
    ("other_model", "was measured on another shape: num_experts 8 (scores) vs None (model)"),
])
def test_prune_scores_that_cannot_be_reused_are_refused_at_validation(damage, needle, tmp_path):
    path = tmp_path / "prune_scores.pt"
    _scores_file(path, "tiny_qwen3_moe" if damage == "other_model" else "tiny_qwen3", fmt=7 if damage == "not_optmodel" else 1)
    if damage == "garbage":
        path.write_bytes(os.urandom(2048))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("task=prune", "task.export_config.num_layers=3", f"task.scores={tmp_path}"))
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("task.scores: ")
    assert needle in err.value.problems[0] and "Fix: " in err.value.problems[0]


def test_prune_scores_of_this_model_pass_validation(tmp_path):
    validate(compose_cfg("task=prune", "task.export_config.num_layers=3",
                         f"task.scores={_scores_file(tmp_path / 'prune_scores.pt')}"))


def test_validate_refuses_a_dir_that_is_not_a_draft():
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("task=validate", f"task.draft={TINY_MODELS_DIR / 'tiny_qwen3'}"))
    assert err.value.problems == [next(p for p in err.value.problems if p.startswith("task.draft: "))]
    assert "is not an EAGLE3 draft" in err.value.problems[0] and "draft_vocab_size" in err.value.problems[0]


def test_lm_eval_close_names_resemble_the_typed_one():
    from optmodel.evaluation.task_index import close_names

    known = ["gsm8k", "gsm8k_cot", "wsm", "hellaswag", "hellaswag_vi", "arc_easy", "medtext", "wikitext"]
    assert close_names("gsm8", known) == ["gsm8k"]
    assert close_names("wikitext2", known) == ["wikitext"]
    assert close_names("totally_new", known) == []


# --- dry runs and exports ------------------------------------------------------------------------
def test_a_dry_run_of_a_gpu_recipe_plans_on_a_machine_without_one(monkeypatch, capsys):
    from optmodel.run import execute

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cfg = compose_cfg("experiment=qwen3_8b_fp8", "run.dry_run=true")
    assert cfg.backend.device == "cuda"
    plan = execute(cfg, "unused")
    out = capsys.readouterr().out
    assert plan["world_size"] >= 1 and "on this machine (fix before running here)" in out
    assert "backend.device: cuda was asked for but no NVIDIA GPU is visible" in out  # a note, not a refusal
    with pytest.raises(ConfigError, match="backend.device: cuda was asked for"):
        validate(compose_cfg("backend.device=cuda"))  # the real run still refuses


def test_a_quantized_export_as_the_model_is_refused_with_how_to_evaluate_it(tmp_path):
    import shutil

    export = tmp_path / "export"  # what ModelOpt's unified HF export adds to a checkpoint
    shutil.copytree(TINY_MODELS_DIR / "tiny_qwen3", export)
    config = json.loads((export / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "modelopt", "quant_algo": "FP8"}
    (export / "config.json").write_text(json.dumps(config))
    (export / "hf_quant_config.json").write_text(json.dumps({"quantization": {"quant_algo": "FP8"}}))
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("task=mmlu", f"model.checkpoint={export}"))
    problem = next(p for p in err.value.problems if p.startswith("model.checkpoint:"))
    assert "is a ModelOpt quantized export (quant_algo FP8)" in problem and "run.load=<that quantize run dir>" in problem
