"""The GPU check's CPU rehearsal, fast part: it runs end to end here and writes summary.json
in the documented schema (benchmarks/gpu/README.md); the kernel probe sees the CPU path."""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STATUSES = {"passed", "failed", "skipped", "timeout"}
STEPS = ["environment", "requirements", "gpu_tests", "quantize_nvfp4", "cuda_ext_fp8", "quantize_fp8",
         "megatron_convert", "megatron_convert_back", "megatron_quantize", "megatron_mmlu", "loglikelihood",
         "memory_benchmark"]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpucheck")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "GPUCHECK_RUNS": str(out / "runs")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu/check.sh"), "--cpu-rehearsal", "--fast"],
                          env=env, capture_output=True, text=True, timeout=600)
    return proc, out


def test_fast_rehearsal_passes_and_returns_three_files(rehearsal):
    proc, out = rehearsal
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert sorted(p.name for p in out.iterdir() if p.name != "runs") == ["check.log", "logs.tar.gz", "summary.json"]
    assert "gpucheck cpu-rehearsal: ok" in (out / "check.log").read_text()


def test_summary_follows_the_schema(rehearsal):
    summary = json.loads((rehearsal[1] / "summary.json").read_text())
    assert summary["schema"] == 1 and summary["mode"] == "cpu-rehearsal" and summary["fast"] is True
    assert summary["ok"] is True and summary["failed"] == []
    assert list(summary["steps"]) == STEPS
    for name, step in summary["steps"].items():
        assert set(step) == {"status", "seconds", "reason", "log", "figures"}
        assert step["status"] in STATUSES and step["seconds"] >= 0 and step["log"] == f"logs/{name}.log"
        assert (step["reason"] is None) == (step["status"] == "passed"), name
    assert summary["environment"]["cuda_available"] is False
    assert summary["environment"]["versions"]["nvidia-modelopt"] == importlib.metadata.version("nvidia-modelopt")
    for name, step in summary["steps"].items():
        for key, value in step["figures"].items():
            assert summary["figures"][f"{name}.{key}"] == value


def test_rehearsal_sees_the_cpu_block_fake_quant_and_times_calibration(rehearsal):
    step = json.loads((rehearsal[1] / "summary.json").read_text())["steps"]["quantize_nvfp4"]
    assert step["status"] == "passed"
    figures = step["figures"]
    # NVFP4 on CPU goes through optmodel's block backend, never ModelOpt's Triton kernel
    assert figures["quant_calls"]["cpu_block_fakequant"] > 0
    assert figures["quant_calls"].get("triton_fp4_fake_quant_block", 0) == 0
    calib = figures["calibration"]
    assert calib["quantize_over_bare"] == pytest.approx(calib["quantize_s"] / calib["bare_forward_s"], rel=0.01)
    assert calib["bare_forward_s"] > 0 and calib["quantize_s"] > 0
    assert figures["perplexity_after"] > 1 and figures["quant_algo"] == "NVFP4"
