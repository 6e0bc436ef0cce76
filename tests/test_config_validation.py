"""Config composition and validation: every shipped file composes, bad input fails early
with one message that names the field and the fix. No torch is imported here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ValidationError

from optmodel.facts.layout import pipeline_stage_layers
from optmodel.config.validate import ConfigError, parallel_problems
from optmodel.checked import config_problems, validate
from optmodel.facts.hf_config import to_hf_config_dict
from optmodel.facts.paths import conf_dir

from conftest import compose_cfg

# model=auto has no numbers until its checkpoint is read: tests/test_auto_model.py
MODELS = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml") if p.stem != "auto")
PARALLELS = sorted(p.stem for p in (conf_dir() / "parallel").glob("*.yaml"))


def problems_of(*overrides, world_size=1, check_inputs=True):
    return config_problems(compose_cfg(*overrides), world_size=world_size, check_inputs=check_inputs)


def error_of(*overrides, world_size=1, check_inputs=True) -> str:
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(*overrides), world_size=world_size, check_inputs=check_inputs)
    return str(info.value)


def test_default_config_is_the_tiny_qwen3_fp8_quantize_run():
    cfg = compose_cfg()
    assert (cfg.model.name, cfg.task.name, cfg.task.quant_cfg, cfg.parallel.name, cfg.backend.name) == (
        "tiny_qwen3", "quantize", "FP8_DEFAULT_CFG", "single", "hf",
    )
    validate(cfg)  # the bundled checkpoint exists and matches its config


@pytest.mark.parametrize("model", MODELS)
def test_every_model_composes_with_single(model):
    cfg = compose_cfg(f"model={model}", "parallel=single")
    assert cfg.model.name == model
    assert config_problems(cfg, check_inputs=False) == []


@pytest.mark.parametrize("parallel", PARALLELS)
def test_every_parallel_file_composes(parallel):
    cfg = compose_cfg(f"parallel={parallel}")
    assert cfg.parallel.name == parallel
    assert cfg.parallel.tensor * cfg.parallel.pipeline >= 1


# Every experiment= recipe is composed and validated on its own world size in test_recipes.py.


def test_kimi_k2_on_pp16_kimi_layout_validates():
    cfg = compose_cfg("model=kimi_k2_instruct", "parallel=pp16_kimi")
    assert parallel_problems(cfg.model, cfg.parallel) == []
    assert pipeline_stage_layers(cfg.model.num_layers, cfg.parallel) == [3] + [4] * 14 + [2]


def test_qwen3_8b_on_pp16_kimi_names_the_split_and_36_layers():
    msg = error_of("model=qwen3_8b", "parallel=pp16_kimi", world_size=16, check_inputs=False)
    assert "parallel.pipeline" in msg
    assert "3 (first stage)" in msg and "2 (last stage)" in msg and "14 stage(s)" in msg
    assert "36 layers" in msg


def test_qwen2_5_7b_on_tp8_names_28_heads_and_4_query_groups():
    msg = error_of("model=qwen2_5_7b_instruct", "parallel=tp8", world_size=8, check_inputs=False)
    assert "parallel.tensor" in msg
    assert "28 attention heads and 4 query groups" in msg
    assert "parallel.tensor=4" in msg  # the fix: the largest TP that divides both


def test_expert_parallel_on_a_dense_model_is_refused():
    msg = error_of("model=llama3_1_8b_instruct", "parallel=tp8_ep8", world_size=8, check_inputs=False)
    assert "parallel.expert: EP 8" in msg and "dense" in msg


def test_expert_parallel_must_divide_the_experts():
    msg = error_of("model=tiny_qwen3_moe", "parallel.expert=3", world_size=3, check_inputs=False)
    assert "must divide the 8 experts" in msg


def test_world_size_must_match_the_layout():
    msg = error_of("model=qwen3_8b", "parallel=tp2", world_size=1, check_inputs=False)
    assert "run.world_size" in msg and "TP x PP x CP = 2" in msg and "1 was launched" in msg


def test_explicit_data_parallel_size_must_match_world_size():
    msg = error_of("parallel.data=2", world_size=1, check_inputs=False)
    assert "parallel.data" in msg and "2 processes" in msg


def test_hf_backend_refuses_model_parallel_layouts():
    msg = error_of("model=qwen3_8b", "parallel=tp2", world_size=2, check_inputs=False)
    assert "backend=hf" in msg and "parallel=tp2" in msg


def test_sequence_parallel_needs_tensor_parallel():
    assert any("parallel.sequence_parallel" in p for p in problems_of("parallel.sequence_parallel=true"))


def test_unknown_quant_format_suggests_close_names():
    msg = error_of("task.quant_cfg=FP8_DEFALT_CFG")
    assert "task.quant_cfg: unknown value 'FP8_DEFALT_CFG'" in msg
    assert "Did you mean FP8_DEFAULT_CFG" in msg


def test_cuda_only_format_is_refused_on_cpu_and_cpu_block_formats_are_not():
    msg = error_of("task.quant_cfg=NVFP4_FOUR_OVER_SIX_CFG", "backend.device=cpu")
    assert "task.quant_cfg: NVFP4_FOUR_OVER_SIX_CFG needs CUDA" in msg and "NVFP4_DEFAULT_CFG" in msg
    for fmt in ("NVFP4_DEFAULT_CFG", "MXFP8_DEFAULT_CFG", "NVFP4_AWQ_LITE_CFG"):
        validate(compose_cfg(f"task.quant_cfg={fmt}", "backend.device=cpu"), world_size=1)


def test_kv_only_and_experts_only_formats_are_refused_as_model_formats():
    assert "quantizes only the KV cache. Fix: a model format plus task.kv_cache" in error_of("task.quant_cfg=FP8_KV_CFG")
    assert "model=tiny_qwen3 is dense" in error_of("task.quant_cfg=NVFP4_EXPERTS_ONLY_CFG")
    validate(compose_cfg("model=tiny_qwen3_moe", "task.quant_cfg=NVFP4_EXPERTS_ONLY_CFG"), world_size=1)


def test_kv_cache_format_is_checked_and_rotated_nvfp4_kv_needs_a_gpu():
    assert "task.kv_cache: unknown value 'fp16'" in error_of("task.kv_cache=fp16")
    msg = error_of("task.kv_cache=nvfp4_rotate", "backend.device=cpu")
    assert "task.kv_cache: nvfp4_rotate needs fast_hadamard_transform" in msg


def test_cuda_device_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "backend.device: cuda was asked for" in error_of("backend.device=cuda")


def test_unknown_task_name_lists_valid_ones():
    msg = error_of("task.name=prunne")
    assert "task.name: unknown value 'prunne'" in msg and "quantize" in msg


def test_unknown_model_file_lists_the_options():
    with pytest.raises(MissingConfigException) as info:
        compose_cfg("model=qwen4_8b")
    assert "qwen3_8b" in str(info.value) and "model/qwen4_8b" in str(info.value)


def test_misspelt_field_fails_at_composition_with_its_path():
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg("model.num_layer=4")
    assert "num_layer" in str(info.value.__cause__ or info.value)


def test_wrongly_typed_field_fails_at_composition():
    with pytest.raises((ConfigCompositionException, ValidationError)) as info:
        compose_cfg("model.num_layers=many")
    assert "num_layers" in str(info.value.__cause__ or info.value)


def test_real_model_without_checkpoint_says_how_to_provide_it():
    msg = error_of("model=qwen3_8b")
    assert "model.checkpoint: model=qwen3_8b needs a local Hugging Face checkpoint" in msg


def test_missing_checkpoint_dir(tmp_path):
    msg = error_of("model=qwen3_8b", f"model.checkpoint={tmp_path / 'nope'}")
    assert "is not a directory" in msg


def test_corrupt_config_json(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "qwen3", ')
    (tmp_path / "model.safetensors").write_bytes(b"")
    msg = error_of("model=qwen3_8b", f"model.checkpoint={tmp_path}")
    assert "not valid JSON" in msg


def test_checkpoint_without_weights(tmp_path):
    cfg = compose_cfg("model=qwen3_8b")
    (tmp_path / "config.json").write_text(json.dumps(to_hf_config_dict(cfg.model)))
    msg = error_of("model=qwen3_8b", f"model.checkpoint={tmp_path}")
    assert "holds no weights" in msg


def test_checkpoint_whose_config_disagrees_names_each_field(tmp_path):
    cfg = compose_cfg("model=qwen2_5_7b_instruct")
    hf = to_hf_config_dict(cfg.model)
    hf["num_hidden_layers"] = 36
    hf["hidden_size"] = 4096
    (tmp_path / "config.json").write_text(json.dumps(hf))
    (tmp_path / "model.safetensors").write_bytes(b"")
    msg = error_of("model=qwen2_5_7b_instruct", f"model.checkpoint={tmp_path}")
    assert "model.num_layers" in msg and "28" in msg and "36" in msg
    assert "model.hidden_size" in msg and "3584" in msg and "4096" in msg


def test_seq_len_beyond_max_positions():
    msg = error_of("data.seq_len=4096")
    assert "data.seq_len: 4096 exceeds" in msg and "1024" in msg


def test_text_data_needs_existing_files(tmp_path):
    msg = error_of("data=text", f"data.calib_path={tmp_path / 'calib.jsonl'}", f"data.eval_path={tmp_path / 'x.txt'}")
    assert "data.calib_path" in msg and "data.eval_path" in msg


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg("model=qwen2_5_7b_instruct", "parallel=tp8", "task.quant_cfg=FP9", "data.batch_size=0"),
                 world_size=8, check_inputs=False)
    fields = {p.split(":")[0] for p in info.value.problems}
    assert {"parallel.tensor", "task.quant_cfg", "data.batch_size", "backend"} <= fields
    assert f"found {len(info.value.problems)} problem(s)" in str(info.value)


@pytest.mark.parametrize(
    ("layers", "pp", "first", "last", "expected"),
    [
        (61, 16, 3, 2, [3] + [4] * 14 + [2]),
        (32, 4, None, None, [8, 8, 8, 8]),
        (30, 4, 6, None, [6, 8, 8, 8]),
        (10, 2, 6, 4, [6, 4]),
    ],
)
def test_pipeline_stage_layers(layers, pp, first, last, expected):
    from omegaconf import OmegaConf

    par = OmegaConf.create({"pipeline": pp, "pipeline_first_stage_layers": first, "pipeline_last_stage_layers": last})
    assert pipeline_stage_layers(layers, par) == expected


def test_cfg_job_prints_without_importing_torch():
    code = (
        "import sys, runpy; sys.argv=['optmodel','model=kimi_k2_instruct','parallel=pp16_kimi','--cfg','job'];\n"
        "try:\n    runpy.run_module('optmodel', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "name: kimi_k2_instruct" in out and "pipeline_first_stage_layers: 3" in out


def test_help_lists_every_group_option():
    out = subprocess.run([sys.executable, "-m", "optmodel", "--help"], capture_output=True, text=True, check=True).stdout
    for group, options in (("model", sorted(MODELS + ["auto"])), ("parallel", PARALLELS)):
        line = next(l for l in out.splitlines() if l.startswith(f"{group}: "))
        assert line == f"{group}: {', '.join(options)}"


def test_ci_runs_the_readme_test_command():
    root = Path(__file__).resolve().parents[1]
    ci_cmd = [l for l in (root / ".ci" / "run").read_text().splitlines() if "pytest" in l][0].strip()
    assert ci_cmd in (root / "README.md").read_text()
