"""`model=auto model.checkpoint=DIR`: the architecture read from DIR/config.json composes
to the same numbers as the matching conf/model file, for every supported family."""

from __future__ import annotations

import json

import pytest

from optmodel.config.errors import ConfigError
from optmodel.config.resolve import resolve_run_config
from optmodel.config.validate import config_problems
from optmodel.manifest import read_manifest
from optmodel.models.hf_config import FAMILIES, model_config_mismatches
from optmodel.paths import TINY_MODELS_DIR
from optmodel.run import execute

from conftest import compose_cfg
from test_model_configs import REAL_CONFIG_JSON

TINY = sorted(p.name for p in (TINY_MODELS_DIR).iterdir() if (p / "config.json").is_file())


def auto(checkpoint, *overrides):
    return resolve_run_config(compose_cfg("model=auto", f"model.checkpoint={checkpoint}", *overrides),
                              typed_model=True)


def eager_for(name):  # transformers runs gpt-oss's attention sinks in eager attention only
    return ["backend.attn_implementation=eager"] if "gpt_oss" in name else []


@pytest.mark.parametrize("name", TINY)
def test_shipped_tiny_models(name):
    cfg = auto(TINY_MODELS_DIR / name, *eager_for(name))
    assert model_config_mismatches(compose_cfg(f"model={name}").model, cfg.model) == []
    assert cfg.model.name == name
    assert config_problems(cfg) == []  # with the checkpoint checks: config.json agrees with itself


@pytest.mark.parametrize("name", sorted(REAL_CONFIG_JSON))
def test_published_config_json(name, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(REAL_CONFIG_JSON[name]))
    cfg = auto(tmp_path, *eager_for(name))
    assert model_config_mismatches(compose_cfg(f"model={name}").model, cfg.model) == []
    assert config_problems(cfg, check_inputs=False) == []


def test_every_family_is_covered():
    families = {compose_cfg(f"model={n}").model.family for n in list(REAL_CONFIG_JSON) + TINY}
    assert families == set(FAMILIES)


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba", "hidden_size": 64}))
    with pytest.raises(ConfigError) as err:
        auto(tmp_path)
    (problem,) = err.value.problems
    assert problem.startswith("model.checkpoint: model=auto") and "'mamba'" in problem
    assert all(t in problem for t in ("llama", "qwen3_moe", "llama4", "deepseek_v3", "kimi_k2", "gpt_oss"))


def test_missing_checkpoint_or_config_json_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"model.checkpoint: model=auto reads the architecture"):
        resolve_run_config(compose_cfg("model=auto"))
    with pytest.raises(ConfigError, match=r"config.json, which does not exist"):
        auto(tmp_path)


def test_auto_model_runs_and_records_its_name(tmp_path):
    ckpt = TINY_MODELS_DIR / "tiny_llama"
    cfg = compose_cfg("model=auto", f"model.checkpoint={ckpt}", "task.perplexity=false", "task.export=false",
                      "task.save_model=false", "data.num_samples=4", "data.seq_len=32")
    execute(cfg, tmp_path / "run", typed_model=True)
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "completed" and manifest["model"] == "tiny_llama"
    assert manifest["architecture"]["num_layers"] == compose_cfg("model=tiny_llama").model.num_layers
