"""`model=auto model.checkpoint=DIR`: the architecture read from DIR/config.json composes
to the same numbers as the matching conf/model file, for every supported family."""

from __future__ import annotations

import json

import pytest

from optmodel.facts.errors import ConfigError
from optmodel.checked import resolve_run_config
from optmodel.checked import config_problems
from optmodel.facts.rundir import read_manifest
from optmodel.facts.hf_config import model_config_mismatches
from optmodel.facts.hf_families import FAMILIES
from optmodel.facts.paths import TINY_MODELS_DIR
from optmodel.run import execute

from conftest import compose_cfg
from test_model_configs import REAL_CONFIG_JSON

TINY = sorted(p.name for p in (TINY_MODELS_DIR).iterdir() if (p / "config.json").is_file())


def auto(checkpoint, *overrides):
    return resolve_run_config(compose_cfg("model=auto", f"model.checkpoint={checkpoint}", *overrides),
                              typed_model=True)


@pytest.mark.parametrize("name", TINY)
def test_shipped_tiny_models(name):
    cfg = auto(TINY_MODELS_DIR / name)
    assert model_config_mismatches(compose_cfg(f"model={name}").model, cfg.model) == []
    assert cfg.model.name == name
    assert config_problems(cfg) == []  # with the checkpoint checks: config.json agrees with itself


@pytest.mark.parametrize("name", sorted(REAL_CONFIG_JSON))
def test_published_config_json(name, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(REAL_CONFIG_JSON[name]))
    cfg = auto(tmp_path)
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


# Qwen/Qwen3-30B-A3B's published config.json (its router runs in fp32 in transformers)
QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "decoder_sparse_step": 1,
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 6144,
    "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe",
    "moe_intermediate_size": 768, "norm_topk_prob": True, "num_attention_heads": 32, "num_experts": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_sliding_window": False, "vocab_size": 151936,
}


def _every_field(model_cfg):
    """All fields, training knobs included (router dtype, aux-loss coefficient), flat; the
    embedding rows as config.json counts them."""
    from omegaconf import OmegaConf

    m = OmegaConf.to_container(model_cfg)
    m["vocab_size"] = m.pop("padded_vocab_size") or m["vocab_size"]
    flat = {k: v for k, v in m.items() if k not in ("name", "checkpoint", "moe", "mla")}
    for block in ("moe", "mla"):
        flat.update({f"{block}.{k}": v for k, v in (m[block] or {}).items()})
    return flat


@pytest.mark.parametrize("name", sorted(REAL_CONFIG_JSON) + ["qwen3_30b_a3b"])
def test_auto_keeps_every_setting_of_the_conf_file(name, tmp_path):
    published = QWEN3_30B_A3B if name == "qwen3_30b_a3b" else dict(REAL_CONFIG_JSON[name])
    if name == "kimi_k2_instruct":
        published.pop("aux_loss_alpha")  # DeepSeek's configuration class default: 0.001, as the conf file says
    (tmp_path / "config.json").write_text(json.dumps(published))
    assert _every_field(auto(tmp_path).model) == _every_field(compose_cfg(f"model={name}").model)


def test_cfg_job_prints_what_runs(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "optmodel", "model=auto", f"model.checkpoint={TINY_MODELS_DIR / 'tiny_gpt_oss'}",
                          "task.quant_cfg=fp8", "--cfg", "job"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "???" not in out.stdout and "name: tiny_gpt_oss" in out.stdout and "num_layers: 4" in out.stdout
    assert "attn_implementation: eager" in out.stdout and "quant_cfg: FP8_DEFAULT_CFG" in out.stdout
    assert list(tmp_path.iterdir()) == []  # printing writes nothing
