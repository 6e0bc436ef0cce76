"""A task that exists on one backend picks it in its conf/task YAML: `task=convert` composes
backend=megatron (so `--cfg job` prints it) without backend= typed; a typed backend, or an
experiment's, wins (and is checked)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import yaml
from hydra import compose, initialize_config_dir

from optmodel.tasks.registry import task_specs
from optmodel.checked import config_problems
from optmodel.facts.paths import conf_dir

from conftest import compose_cfg


def test_convert_composes_megatron_and_keeps_typed_backend_fields():
    cfg = compose_cfg("task=convert", "backend.device=cpu", "backend.dtype=bfloat16")
    assert (cfg.backend.name, cfg.backend.device, cfg.backend.dtype) == ("megatron", "cpu", "bfloat16")
    assert cfg.backend.token_dispatcher == "allgather" and cfg.backend.cpu_init is False
    assert config_problems(cfg, check_inputs=False) == []


def test_a_typed_backend_wins_in_either_order_and_tasks_on_several_backends_keep_the_default():
    assert compose_cfg("task=convert", "backend=hf").backend.name == "hf"
    assert compose_cfg("backend=hf", "task=convert").backend.name == "hf"
    assert compose_cfg("task=quantize").backend.name == "hf"
    assert compose_cfg("task=quantize", "backend=megatron").backend.name == "megatron"


def test_an_experiment_s_backend_wins_over_its_task_s_pick(tmp_path):
    conf = shutil.copytree(conf_dir(), tmp_path / "conf")
    header = "# @package _global_\ndefaults:\n  - override /task: convert\n"
    (conf / "experiment" / "convert_only.yaml").write_text(header)
    (conf / "experiment" / "convert_on_hf.yaml").write_text(header + "  - override /backend: hf\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        picked = {name: compose("config", overrides=[f"experiment={name}"]).backend.name
                  for name in ("convert_only", "convert_on_hf")}
    assert picked == {"convert_only": "megatron", "convert_on_hf": "hf"}


def test_a_task_yaml_picks_only_a_backend_its_spec_runs_on():
    picked = {}
    for name, spec in task_specs().items():
        defaults = yaml.safe_load((conf_dir() / "task" / f"{name}.yaml").read_text())["defaults"]
        for entry in defaults:
            key = next(iter(entry)) if isinstance(entry, dict) else ""
            if key.startswith("override /backend"):
                picked[name] = entry[key]
                assert entry[key] in spec.backends, (name, entry[key], spec.backends)
    assert picked["convert"] == "megatron"
    for name, spec in task_specs().items():  # one backend and no pick: the user would have to type it
        assert len(spec.backends) > 1 or spec.backends == ("hf",) or name in picked, name


def test_cfg_job_prints_megatron_and_the_cli_refuses_a_typed_hf(tmp_path):
    run = [sys.executable, "-m", "optmodel", "task=convert"]
    shown = subprocess.run(run + ["--cfg", "job"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert yaml.safe_load(shown.stdout)["backend"]["name"] == "megatron"
    typed = subprocess.run(run + ["backend=hf", f"hydra.run.dir={tmp_path}/b"], capture_output=True, text=True, timeout=120)
    assert typed.returncode == 2
    assert "backend: task=convert does not run on backend=hf (it runs on megatron)" in typed.stderr
    assert "Traceback" not in typed.stderr
