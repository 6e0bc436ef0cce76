"""task.deploy: an export the chosen engine's ModelOpt loader rejects is refused at
validation, naming the formats that engine loads."""

from __future__ import annotations

import json

import pytest

from optmodel.checked import config_problems
from optmodel.facts.rundir import MANIFEST_NAME

from conftest import compose_cfg

VLLM_ALGOS = "FP8, FP8_PER_CHANNEL_PER_TOKEN, FP8_PB_WO, NVFP4, W4A16_NVFP4, MXFP8, MIXED_PRECISION"


def problems(*overrides):
    return config_problems(compose_cfg(*overrides), check_inputs=False)


def test_vllm_refuses_int4_awq_naming_its_formats():
    (problem,) = problems("task.deploy=vllm", "task.quant_cfg=INT4_AWQ_CFG")
    assert problem.startswith("task.quant_cfg: task.deploy=vllm: vLLM 0.32")
    assert "W4A16_AWQ" in problem and VLLM_ALGOS in problem
    assert "NVFP4_DEFAULT_CFG" in problem and "Fix:" in problem


@pytest.mark.parametrize("overrides", [
    ("task.deploy=vllm", "task.quant_cfg=nvfp4", "task.kv_cache=fp8"),
    ("task.deploy=vllm", "task.quant_cfg=FP8_PER_CHANNEL_PER_TOKEN_CFG"),
    ("task.deploy=vllm", "task.auto_quantize.enabled=true"),  # MIXED_PRECISION
    ("task.deploy=trtllm", "task.quant_cfg=int4_awq", "task.kv_cache=nvfp4"),
    ("task.deploy=sglang", "task.quant_cfg=FP8_DEFAULT_CFG"),
    ("task.deploy=any", "task.quant_cfg=nvfp4", "task.kv_cache=fp8"),
    ("task.deploy=none", "task.quant_cfg=INT4_AWQ_CFG"),
])
def test_formats_the_engine_loads_pass(overrides):
    assert problems(*overrides) == []


def test_kv_cache_and_each_engine_of_any_are_checked():
    found = problems("task.deploy=any", "task.quant_cfg=fp8", "task.kv_cache=nvfp4")
    assert [p.split(":")[1].strip() for p in found] == ["task.deploy=any"] * 2  # vLLM and SGLang; TRT-LLM loads it
    assert "vLLM 0.32" in found[0] and "SGLang" in found[1]
    assert all("kv_cache_quant_algo NVFP4" in p for p in found)
    (sglang,) = problems("task.deploy=sglang", "task.auto_quantize.enabled=true")
    assert "MIXED_PRECISION" in sglang


def test_unknown_target_is_refused():
    (problem,) = problems("task.deploy=tgi")
    assert problem.startswith("task.deploy: unknown value 'tgi'") and "vllm, sglang, trtllm, any" in problem


def test_export_task_checks_the_loaded_runs_format(tmp_path):
    run = tmp_path / "quantized"
    run.mkdir()
    (run / MANIFEST_NAME).write_text(json.dumps({"task": "quantize", "status": "completed", "quantization": {
        "format": "INT4_AWQ_CFG", "kv_cache": "none", "weight_only": False}}))
    (problem,) = problems("task=export", f"run.load={run}", "task.deploy=vllm")
    assert problem.startswith("run.load: task.deploy=vllm") and VLLM_ALGOS in problem
    assert problems("task=export", f"run.load={run}", "task.deploy=trtllm") == []


@pytest.mark.parametrize("target", ["vllm", "sglang", "any"])
def test_a_fake_quant_export_is_refused_for_every_engine_saying_what_it_would_serve(target):
    (problem,) = problems(f"task.deploy={target}", "task.quant_cfg=fp8", "task.export_format=vllm_fq")
    assert problem.startswith(f"task.deploy: {target}: the vllm_fq export")
    assert "serves it as an unquantized bf16 model" in problem and "Fix: the hf export format" in problem
