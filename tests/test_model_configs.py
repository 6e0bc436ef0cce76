"""conf/model/*.yaml: every file composes, the real models carry the MODELS.md numbers, and
optmodel.facts.hf_config maps them to and from Hugging Face config.json without loss."""

from __future__ import annotations

import copy
import functools
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from optmodel.config.schema import register_schemas
from optmodel.tasks.registry import task_specs
from optmodel.facts.hf_families import FAMILIES
from optmodel.facts.paths import conf_dir
from optmodel.facts.hf_config import (
    architecture_mismatches,
    from_hf_config_dict,
    to_hf_config_dict,
    to_transformers_config,
)

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = conf_dir()  # absolute: <checkout>/conf
MODEL_NAMES = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem != "auto")  # auto: test_auto_model.py

register_schemas(task_specs())


@functools.lru_cache(maxsize=None)
def model_cfg(name: str):
    """cfg.model of `optmodel model=<name>` (composed once per test session)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"model={name}"]).model


# MODELS.md, one row per real model:
# (config, family, layers, hidden, ffn, heads, query groups, head dim, tied,
#  MoE (experts, top-k, moe ffn, shared ffn, first dense layers) or None)
TABLE = [
    ("qwen2_5_0_5b_instruct", "qwen2", 24, 896, 4864, 14, 2, 64, True, None),
    ("qwen2_5_7b_instruct", "qwen2", 28, 3584, 18944, 28, 4, 128, False, None),
    ("qwen3_0_6b", "qwen3", 28, 1024, 3072, 16, 8, 128, True, None),
    ("qwen3_8b", "qwen3", 36, 4096, 12288, 32, 8, 128, False, None),
    ("qwen3_30b_a3b", "qwen3_moe", 48, 2048, 6144, 32, 4, 128, False, (128, 8, 768, 0, 0)),
    ("qwen3_235b_a22b", "qwen3_moe", 94, 4096, 12288, 64, 4, 128, False, (128, 8, 1536, 0, 0)),
    ("llama3_1_8b_instruct", "llama", 32, 4096, 14336, 32, 8, 128, False, None),
    ("llama3_2_1b_instruct", "llama", 16, 2048, 8192, 32, 8, 64, True, None),
    ("llama4_scout_17b_16e_instruct", "llama4", 48, 5120, 16384, 40, 8, 128, False, (16, 1, 8192, 8192, 0)),
    ("llama4_maverick_17b_128e_instruct", "llama4", 48, 5120, 16384, 40, 8, 128, False, (128, 1, 8192, 8192, 0)),
    ("kimi_k2_instruct", "deepseek_v3", 61, 7168, 18432, 64, None, 128, False, (384, 8, 2048, 2048, 1)),
    ("deepseek_r1", "deepseek_v3", 61, 7168, 18432, 128, None, 128, False, (256, 8, 2048, 2048, 3)),
    ("deepseek_v2_lite", "deepseek_v2", 27, 2048, 10944, 16, None, 128, False, (64, 6, 1408, 2816, 1)),
    ("gpt_oss_20b", "gpt_oss", 24, 2880, 2880, 64, 8, 64, False, (32, 4, 2880, 0, 0)),
    ("gpt_oss_120b", "gpt_oss", 36, 2880, 2880, 64, 8, 64, False, (128, 4, 2880, 0, 0)),
]
REAL_MODELS = [row[0] for row in TABLE]

_KIMI_MLA = {"q_lora_rank": 1536, "kv_lora_rank": 512, "qk_head_dim": 128, "qk_pos_emb_head_dim": 64, "v_head_dim": 128}

# MODELS.md's "other" column, as ModelConfig fields.
OTHER = {
    "qwen2_5_0_5b_instruct": {"qkv_bias": True, "rope_theta": 1e6, "vocab_size": 151936,
                              "max_position_embeddings": 32768},
    "qwen2_5_7b_instruct": {"qkv_bias": True, "rope_theta": 1e6, "padded_vocab_size": 152064},
    "qwen3_0_6b": {"qk_layernorm": True, "rope_theta": 1e6, "vocab_size": 151936, "max_position_embeddings": 40960},
    "qwen3_8b": {"qk_layernorm": True, "rope_theta": 1e6, "vocab_size": 151936},
    "qwen3_30b_a3b": {"qk_layernorm": True, "moe.router_dtype": "fp32", "moe.aux_loss_coeff": 1e-3},
    "qwen3_235b_a22b": {"qk_layernorm": True},
    "llama3_1_8b_instruct": {"rope_theta": 500000.0, "rope_scaling.rope_type": "llama3", "vocab_size": 128256},
    "llama3_2_1b_instruct": {"rope_theta": 500000.0, "rope_scaling.rope_type": "llama3", "vocab_size": 128256},
    "llama4_scout_17b_16e_instruct": {
        "qk_l2_norm": True, "moe.router_topk_scaling": 1.0, "moe.router_score_function": "sigmoid",
        "rope_theta": 500000.0, "rope_scaling.factor": 8.0, "padded_vocab_size": 202048, "nope_layer_interval": 4,
    },
    "llama4_maverick_17b_128e_instruct": {
        "moe.layer_freq": 2, "moe.router_score_function": "sigmoid", "padded_vocab_size": 202048,
        "nope_layer_interval": 4,
    },
    "kimi_k2_instruct": {
        **{f"mla.{k}": v for k, v in _KIMI_MLA.items()},
        "moe.router_score_function": "sigmoid", "moe.router_expert_bias": True, "moe.router_bias_update_rate": 1e-3,
        "moe.router_pre_softmax": True, "moe.router_topk_scaling": 2.827, "rope_theta": 50000.0,
        "rope_scaling.rope_type": "yarn", "rope_scaling.factor": 32.0, "rope_scaling.mscale": 1.0,
        "rope_scaling.mscale_all_dim": 1.0, "padded_vocab_size": 163840, "max_position_embeddings": 131072,
        "trust_remote_code": True,
    },
    "deepseek_r1": {
        **{f"mla.{k}": v for k, v in _KIMI_MLA.items()},
        "moe.router_score_function": "sigmoid", "moe.router_expert_bias": True, "rope_theta": 10000.0,
        "rope_scaling.factor": 40.0, "max_position_embeddings": 163840,
    },
    "deepseek_v2_lite": {
        "mla.q_lora_rank": None, "mla.kv_lora_rank": 512, "mla.qk_pos_emb_head_dim": 64, "mla.v_head_dim": 128,
        "moe.router_score_function": "softmax",
    },
    "gpt_oss_20b": {"moe.router_score_function": "softmax", "rope_theta": 150000.0, "padded_vocab_size": 201088},
    "gpt_oss_120b": {"moe.router_score_function": "softmax", "rope_theta": 150000.0, "padded_vocab_size": 201088},
}

ARCH_FIELDS = (
    "family", "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
    "kv_channels", "qk_layernorm", "qk_l2_norm", "qkv_bias", "tied_embeddings", "max_position_embeddings",
    "rope_theta", "rope_scaling", "nope_layer_interval", "sliding_window", "norm_eps",
)
MOE_FIELDS = (
    "num_experts", "top_k", "ffn_hidden_size", "shared_expert_ffn_hidden_size", "first_k_dense_layers",
    "layer_freq", "router_score_function", "router_topk_scaling", "router_norm_topk_prob", "router_expert_bias",
    "router_num_groups", "router_group_topk",
)
MLA_FIELDS = ("q_lora_rank", "kv_lora_rank", "qk_head_dim", "qk_pos_emb_head_dim", "v_head_dim")


def dig(cfg, path: str):
    for part in path.split("."):
        cfg = cfg[part]
    return cfg


def text_part(d: dict) -> dict:
    """The text model's part of a config.json dict (Llama-4 nests it)."""
    return d.get("text_config") or d


# -- (a) composition --------------------------------------------------------------------------


def test_every_real_model_has_a_file():
    assert set(REAL_MODELS) <= set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_file_composes(name):
    cfg = model_cfg(name)
    assert cfg.name == name
    assert cfg.family in FAMILIES
    assert (cfg.mla is None) != (cfg.num_query_groups is None)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_model_file_header(name):
    text = (CONF_DIR / "model" / f"{name}.yaml").read_text()
    first = text.splitlines()[0]
    assert first.startswith("# ") and "/" in first, f"{name}.yaml must start with '# <hf org>/<repo>'"
    cfg = model_cfg(name)
    assert cfg.checkpoint is None and not cfg.tiny


# -- (b) the MODELS.md numbers ----------------------------------------------------------------


@pytest.mark.parametrize("name,family,layers,hidden,ffn,heads,groups,head_dim,tied,moe", TABLE, ids=REAL_MODELS)
def test_models_md_numbers(name, family, layers, hidden, ffn, heads, groups, head_dim, tied, moe):
    cfg = model_cfg(name)
    got = (cfg.family, cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size, cfg.num_attention_heads,
           cfg.num_query_groups, cfg.kv_channels, cfg.tied_embeddings)
    assert got == (family, layers, hidden, ffn, heads, groups, head_dim, tied)
    if moe is None:
        assert cfg.moe is None
    else:
        m = cfg.moe
        assert (m.num_experts, m.top_k, m.ffn_hidden_size, m.shared_expert_ffn_hidden_size,
                m.first_k_dense_layers) == moe
    assert (cfg.mla is not None) == (groups is None)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_models_md_other_column(name):
    cfg = model_cfg(name)
    for path, expected in OTHER[name].items():
        value = dig(cfg, path)
        if isinstance(expected, float):
            assert value == pytest.approx(expected), path
        else:
            assert value == expected, path


# -- (c) round trip through config.json -------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_hf_config_round_trip(name):
    cfg = model_cfg(name)
    hf = to_hf_config_dict(cfg)
    back = from_hf_config_dict(hf)
    for field in ARCH_FIELDS:
        assert back[field] == cfg[field], field
    # config.json holds one vocabulary number: the embedding rows
    assert back["vocab_size"] == (cfg.padded_vocab_size or cfg.vocab_size)
    if cfg.moe is None:
        assert back["moe"] is None
    else:
        for field in MOE_FIELDS:
            assert back["moe"][field] == cfg.moe[field], f"moe.{field}"
    if cfg.mla is None:
        assert back["mla"] is None
    else:
        for field in MLA_FIELDS:
            assert back["mla"][field] == cfg.mla[field], f"mla.{field}"
    assert architecture_mismatches(cfg, hf) == []


@pytest.mark.parametrize("name", REAL_MODELS)
def test_hf_config_uses_family_field_names(name):
    cfg = model_cfg(name)
    hf = to_hf_config_dict(cfg)
    text = text_part(hf)
    assert text["num_hidden_layers"] == cfg.num_layers
    assert text["vocab_size"] == (cfg.padded_vocab_size or cfg.vocab_size)
    assert hf["architectures"]
    if cfg.family == "qwen3_moe":
        assert (text["num_experts"], text["num_experts_per_tok"]) == (128, 8)
        assert text["moe_intermediate_size"] == cfg.moe.ffn_hidden_size
        assert text["decoder_sparse_step"] == 1 and text["norm_topk_prob"] is True
    if cfg.family == "deepseek_v3":
        assert text["n_routed_experts"] == cfg.moe.num_experts and text["n_shared_experts"] == 1
        assert text["q_lora_rank"] == 1536 and text["kv_lora_rank"] == 512 and text["qk_nope_head_dim"] == 128
        assert text["topk_method"] == "noaux_tc" and text["scoring_func"] == "sigmoid"
    if cfg.family == "llama4":
        assert hf["model_type"] == "llama4" and text["model_type"] == "llama4_text"
        assert text["intermediate_size"] == 8192 and text["intermediate_size_mlp"] == 16384
    if name == "kimi_k2_instruct":
        assert hf["model_type"] == "kimi_k2"
        assert hf["rope_scaling"]["rope_type"] == "yarn" and hf["rope_scaling"]["factor"] == 32.0
    if name == "deepseek_v2_lite":
        assert text["n_shared_experts"] == 2 and text["q_lora_rank"] is None


# -- (d) transformers -------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_to_transformers_config(name):
    cfg = model_cfg(name)
    tc = to_transformers_config(cfg)
    d = tc.to_dict()
    text = text_part(d)
    assert (text["num_hidden_layers"], text["hidden_size"], text["num_attention_heads"]) == (
        cfg.num_layers, cfg.hidden_size, cfg.num_attention_heads)
    if name == "kimi_k2_instruct":
        assert type(tc).__name__ == "DeepseekV3Config"
    # what save_pretrained would write reads back as the same architecture
    assert architecture_mismatches(cfg, d) == []


def test_llama4_text_only():
    cfg = model_cfg("llama4_scout_17b_16e_instruct")
    hf = to_hf_config_dict(cfg, text_only=True)
    assert hf["model_type"] == "llama4_text" and hf["architectures"] == ["Llama4ForCausalLM"]
    assert architecture_mismatches(cfg, hf) == []
    tc = to_transformers_config(cfg, text_only=True)
    assert type(tc).__name__ == "Llama4TextConfig" and tc.num_local_experts == 16


def test_every_family_reaches_transformers():
    assert {model_cfg(n).family for n in REAL_MODELS} == set(FAMILIES)


# -- (e) mismatches ---------------------------------------------------------------------------


def test_mismatch_names_field_and_both_values():
    cfg = model_cfg("qwen2_5_7b_instruct")
    hf = to_hf_config_dict(cfg)
    hf["num_hidden_layers"] = 36
    assert architecture_mismatches(cfg, hf) == [
        "model.num_layers: the model config says 28 but the checkpoint's config.json says 36"
    ]


def test_mismatch_in_moe_and_family_and_vocab():
    cfg = model_cfg("qwen3_30b_a3b")
    hf = to_hf_config_dict(cfg)
    hf.update(num_experts=64, vocab_size=152064)
    problems = architecture_mismatches(cfg, hf)
    assert any(p.startswith("model.moe.num_experts:") and "128" in p and "64" in p for p in problems)
    assert any(p.startswith("model.vocab_size:") and "151936" in p and "152064" in p for p in problems)
    dense = to_hf_config_dict(model_cfg("qwen3_8b"))
    problems = architecture_mismatches(cfg, dense)
    assert any(p.startswith("model.family:") for p in problems)
    assert any(p.startswith("model.moe:") for p in problems)


def test_unknown_model_type_is_named():
    with pytest.raises(ValueError, match="mistral") as info:
        from_hf_config_dict({"model_type": "mistral", "num_hidden_layers": 2})
    assert "qwen3_moe" in str(info.value)


def test_to_hf_refuses_what_the_family_cannot_say():
    cfg = copy.deepcopy(model_cfg("qwen3_8b"))
    cfg.qk_layernorm = False
    with pytest.raises(ValueError, match="model.qk_layernorm"):
        to_hf_config_dict(cfg)


@pytest.mark.parametrize("name", ["kimi_k2_instruct", "llama4_maverick_17b_128e_instruct"])
def test_dataclass_model_config_maps_as_dictconfig(name):
    cfg = model_cfg(name)
    obj = OmegaConf.to_object(cfg)
    assert type(obj).__name__ == "ModelConfig" and type(obj.moe).__name__ == "MoEConfig"
    assert to_hf_config_dict(obj) == to_hf_config_dict(cfg)
    assert architecture_mismatches(obj, to_hf_config_dict(cfg)) == []


def test_moe_family_needs_its_block():
    cfg = copy.deepcopy(model_cfg("qwen3_30b_a3b"))
    cfg.moe = None
    with pytest.raises(ValueError, match="needs a model.moe block"):
        to_hf_config_dict(cfg)


def test_light_import():
    code = ("import sys, optmodel.facts.hf_config; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# -- real checkpoints' config.json (the published files, trimmed of token ids and quantization) --

REAL_CONFIG_JSON = {
    "qwen2_5_7b_instruct": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 3584,
        "intermediate_size": 18944, "max_position_embeddings": 32768, "max_window_layers": 28,
        "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "use_sliding_window": False, "vocab_size": 152064,
    },
    "llama3_2_1b_instruct": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False, "head_dim": 64,
        "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 8192, "max_position_embeddings": 131072,
        "mlp_bias": False, "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                                 "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "vocab_size": 128256,
    },
    "llama4_scout_17b_16e_instruct": {
        "architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4", "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "text_config": {
            "model_type": "llama4_text", "attention_bias": False, "attention_chunk_size": 8192, "head_dim": 128,
            "hidden_act": "silu", "hidden_size": 5120, "interleave_moe_layer_step": 1, "intermediate_size": 8192,
            "intermediate_size_mlp": 16384, "max_position_embeddings": 10485760, "no_rope_layers": [],
            "num_attention_heads": 40, "num_experts_per_tok": 1, "num_hidden_layers": 48, "num_key_value_heads": 8,
            "num_local_experts": 16, "rms_norm_eps": 1e-05,
            "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "rope_theta": 500000.0, "router_aux_loss_coef": 0.001, "use_qk_norm": True, "vocab_size": 202048,
        },
        "vision_config": {"model_type": "llama4_vision_model", "hidden_size": 1408, "num_hidden_layers": 34},
    },
    "llama4_maverick_17b_128e_instruct": {
        "architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4", "tie_word_embeddings": False,
        "text_config": {
            "model_type": "llama4_text", "attention_chunk_size": 8192, "head_dim": 128, "hidden_size": 5120,
            "interleave_moe_layer_step": 2, "intermediate_size": 8192, "intermediate_size_mlp": 16384,
            "max_position_embeddings": 1048576, "moe_layers": list(range(1, 48, 2)),
            "no_rope_layers": [int((i + 1) % 4 != 0) for i in range(48)], "num_attention_heads": 40,
            "num_experts_per_tok": 1, "num_hidden_layers": 48, "num_key_value_heads": 8, "num_local_experts": 128,
            "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 500000.0, "use_qk_norm": False,
            "vocab_size": 202048,
        },
    },
    "kimi_k2_instruct": {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "kimi_k2", "attention_bias": False,
        "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config"}, "aux_loss_alpha": 0.001,
        "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 7168, "intermediate_size": 18432,
        "kv_lora_rank": 512, "max_position_embeddings": 131072, "moe_intermediate_size": 2048, "moe_layer_freq": 1,
        "n_group": 1, "n_routed_experts": 384, "n_shared_experts": 1, "norm_topk_prob": True,
        "num_attention_heads": 64, "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 64,
        "num_nextn_predict_layers": 0, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {"beta_fast": 1.0, "beta_slow": 1.0, "factor": 32.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 4096, "type": "yarn"},
        "rope_theta": 50000.0, "routed_scaling_factor": 2.827, "scoring_func": "sigmoid", "seq_aux": True,
        "tie_word_embeddings": False, "topk_group": 1, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
        "v_head_dim": 128, "vocab_size": 163840,
    },
    "deepseek_v2_lite": {
        "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "aux_loss_alpha": 0.001,
        "first_k_dense_replace": 1, "hidden_size": 2048, "intermediate_size": 10944, "kv_lora_rank": 512,
        "max_position_embeddings": 163840, "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_group": 1,
        "n_routed_experts": 64, "n_shared_experts": 2, "norm_topk_prob": False, "num_attention_heads": 16,
        "num_experts_per_tok": 6, "num_hidden_layers": 27, "num_key_value_heads": 16, "q_lora_rank": None,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                         "original_max_position_embeddings": 4096, "type": "yarn"},
        "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax", "seq_aux": True,
        "tie_word_embeddings": False, "topk_group": 1, "topk_method": "greedy", "v_head_dim": 128,
        "vocab_size": 102400,
    },
    "gpt_oss_20b": {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "attention_bias": True,
        "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880,
        "initial_context_length": 4096, "intermediate_size": 2880,
        "layer_types": ["sliding_attention", "full_attention"] * 12, "max_position_embeddings": 131072,
        "num_attention_heads": 64, "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 8,
        "num_local_experts": 32, "quantization_config": {"quant_method": "mxfp4"}, "rms_norm_eps": 1e-05,
        "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                         "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": False},
        "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
        "tie_word_embeddings": False, "vocab_size": 201088,
    },
}


@pytest.mark.parametrize("name", sorted(REAL_CONFIG_JSON))
def test_published_config_json_agrees(name):
    assert architecture_mismatches(model_cfg(name), REAL_CONFIG_JSON[name]) == []
