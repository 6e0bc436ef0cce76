"""ModelOpt's hf_ptq short names (`--qformat nvfp4`) work as task.quant_cfg and
auto-quantize formats, and the run records the canonical `*_CFG` name."""

from __future__ import annotations

import pytest

from optmodel.facts.choices import QUANT_FORMATS
from optmodel.config.format_aliases import QFORMAT_ALIASES, resolve_format_aliases
from optmodel.checked import config_problems
from optmodel.facts.rundir import read_manifest
from optmodel.run import execute

from conftest import compose_cfg


def test_every_alias_names_a_format_of_the_pinned_modelopt():
    # QUANT_FORMATS is checked against ModelOpt's own choices in test_quantize_run.py
    assert [short for short, name in QFORMAT_ALIASES.items() if name not in QUANT_FORMATS] == []


@pytest.mark.parametrize("short, canonical", [
    ("fp8", "FP8_DEFAULT_CFG"), ("int4_awq", "INT4_AWQ_CFG"), ("w4a8_awq", "W4A8_AWQ_BETA_CFG"),
    ("int8_sq", "INT8_SMOOTHQUANT_CFG"), ("nvfp4_awq", "NVFP4_AWQ_LITE_CFG"),
    ("fp8_pb_wo", "FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG"), ("int8", "INT8_DEFAULT_CFG"), ("int8_wo", "INT8_WEIGHT_ONLY_CFG"),
    ("NVFP4", "NVFP4_DEFAULT_CFG"),
])
def test_short_name_validates_and_resolves(short, canonical):
    cfg = compose_cfg(f"task.quant_cfg={short}")
    assert config_problems(cfg, check_inputs=False) == []
    assert resolve_format_aliases(cfg).task.quant_cfg == canonical


def test_auto_quantize_formats_resolve():
    cfg = compose_cfg("task.auto_quantize.enabled=true", "task.auto_quantize.formats=[nvfp4,fp8,INT4_AWQ_CFG]")
    assert config_problems(cfg, check_inputs=False) == []
    assert list(resolve_format_aliases(cfg).task.auto_quantize.formats) == ["NVFP4_DEFAULT_CFG", "FP8_DEFAULT_CFG", "INT4_AWQ_CFG"]


def test_unknown_short_name_is_refused_listing_the_short_names():
    problems = config_problems(compose_cfg("task.quant_cfg=nvfp5"), check_inputs=False)
    assert len(problems) == 1 and problems[0].startswith("task.quant_cfg: unknown value 'nvfp5'")
    assert "int4_awq" in problems[0] and "NVFP4_DEFAULT_CFG" in problems[0]


def test_nvfp4_short_name_runs_as_nvfp4_default_cfg(tmp_path):
    cfg = compose_cfg("task.quant_cfg=nvfp4", "task.perplexity=false", "task.export=false", "task.save_model=false",
                      "data.num_samples=4", "data.seq_len=32")
    execute(cfg, tmp_path / "run", typed_model=False)
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "completed"
    assert manifest["quantization"]["format"] == "NVFP4_DEFAULT_CFG"
    assert "quant_cfg: NVFP4_DEFAULT_CFG" in (tmp_path / "run" / "config.yaml").read_text()
