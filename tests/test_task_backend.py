"""A task that exists on one backend picks it: `task=convert` runs on backend=megatron
without backend= typed; a typed backend stays (and is checked)."""

from __future__ import annotations

import subprocess
import sys

from optmodel.config.resolve import resolve_run_config
from optmodel.config.validate import config_problems

from conftest import compose_cfg


def test_convert_picks_megatron_and_keeps_typed_backend_fields():
    cfg = resolve_run_config(compose_cfg("task=convert", "backend.device=cpu", "backend.dtype=bfloat16"),
                             typed_backend=False)
    assert (cfg.backend.name, cfg.backend.device, cfg.backend.dtype) == ("megatron", "cpu", "bfloat16")
    assert cfg.backend.token_dispatcher == "allgather" and cfg.backend.cpu_init is False
    assert config_problems(cfg, check_inputs=False) == []


def test_tasks_on_several_backends_keep_the_default():
    assert resolve_run_config(compose_cfg("task=quantize"), typed_backend=False).backend.name == "hf"


def test_cli_picks_megatron_and_refuses_a_typed_hf(tmp_path):
    run = [sys.executable, "-m", "optmodel", "task=convert"]
    # the alltoall note is only given for backend=megatron: the dry run planned on it
    dry = subprocess.run(run + ["run.dry_run=true", "backend.token_dispatcher=alltoall", f"hydra.run.dir={tmp_path}/a"],
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "backend.token_dispatcher: alltoall needs CUDA" in dry.stdout
    typed = subprocess.run(run + ["backend=hf", f"hydra.run.dir={tmp_path}/b"], capture_output=True, text=True, timeout=120)
    assert typed.returncode == 2
    assert "backend: task=convert does not run on backend=hf (it runs on megatron)" in typed.stderr
    assert "Traceback" not in typed.stderr
