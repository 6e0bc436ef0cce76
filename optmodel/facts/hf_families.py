"""The model families optmodel maps to and from Hugging Face config.json: each family's
traits, how a ModelConfig is read, rope reading and the small helpers the mapping shares
(optmodel.facts.hf_config holds the mapping itself, hf_moe the MoE block styles)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

# ---------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Family:
    model_type: str  # what to_hf_config_dict writes
    architecture: str
    ffn_key: Optional[str] = "intermediate_size"  # dense MLP size; None: equals the expert size
    bias_key: Optional[str] = "attention_bias"  # None: qkv bias fixed by the family (`fixed`)
    sliding: Optional[str] = None  # "qwen" (use_sliding_window) | "gpt_oss" (layer_types) | None
    moe: Optional[str] = None  # key of _MOE_TO_HF / _MOE_FROM_HF
    mla: bool = False
    default_rope_theta: float = 10000.0  # when config.json omits rope_theta (transformers' default)
    qk_l2_norm_key: Optional[str] = None  # Llama-4 use_qk_norm
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # implied by the family


# `fixed`: ModelConfig fields config.json cannot say, so the family decides them; a `...`
# value marks a field this family's config.json does carry after all.
_PLAIN = {"qk_layernorm": False, "qk_l2_norm": False, "nope_layer_interval": None, "sliding_window": None}

_SPECS: Dict[str, _Family] = {
    "llama": _Family("llama", "LlamaForCausalLM", fixed=_PLAIN),
    "qwen2": _Family("qwen2", "Qwen2ForCausalLM", bias_key=None, sliding="qwen",
                     fixed={**_PLAIN, "qkv_bias": True, "sliding_window": ...}),
    "qwen3": _Family("qwen3", "Qwen3ForCausalLM", sliding="qwen",
                     fixed={**_PLAIN, "qk_layernorm": True, "sliding_window": ...}),
    "qwen3_moe": _Family("qwen3_moe", "Qwen3MoeForCausalLM", sliding="qwen", moe="qwen3_moe",
                         fixed={**_PLAIN, "qk_layernorm": True, "sliding_window": ...}),
    # Text model of the Llama-4 checkpoints (config.json nests it under text_config).
    "llama4": _Family("llama4", "Llama4ForConditionalGeneration", ffn_key="intermediate_size_mlp",
                      moe="llama4", default_rope_theta=500000.0, qk_l2_norm_key="use_qk_norm",
                      fixed={**_PLAIN, "qk_l2_norm": ..., "nope_layer_interval": ...}),
    "deepseek_v3": _Family("deepseek_v3", "DeepseekV3ForCausalLM", moe="deepseek", mla=True, fixed=_PLAIN),
    "deepseek_v2": _Family("deepseek_v2", "DeepseekV2ForCausalLM", moe="deepseek", mla=True, fixed=_PLAIN),
    "gpt_oss": _Family("gpt_oss", "GptOssForCausalLM", ffn_key=None, sliding="gpt_oss", moe="gpt_oss",
                       default_rope_theta=150000.0, fixed={**_PLAIN, "sliding_window": ...}),
}
FAMILIES: Tuple[str, ...] = tuple(_SPECS)

# config.json model_type -> family. kimi_k2 is DeepSeek-V3 with remote code.
_MODEL_TYPES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen3_moe": "qwen3_moe",
    "llama4": "llama4",
    "llama4_text": "llama4",
    "deepseek_v3": "deepseek_v3",
    "kimi_k2": "deepseek_v3",
    "deepseek_v2": "deepseek_v2",
    "gpt_oss": "gpt_oss",
}
_REMOTE_CODE_MODEL_TYPE = {"deepseek_v3": "kimi_k2"}  # written when trust_remote_code is set

LLAMA4_ATTENTION_CHUNK_SIZE = 8192  # both Llama-4 checkpoints; no ModelConfig field

# ---------------------------------------------------------------------------------------------
# Reading a ModelConfig (DictConfig, dataclass or anything with attributes)
# ---------------------------------------------------------------------------------------------

_MODEL_DEFAULTS: Dict[str, Any] = {
    "name": None, "family": None, "trust_remote_code": False, "num_layers": None, "hidden_size": None,
    "ffn_hidden_size": None, "num_attention_heads": None, "num_query_groups": None, "kv_channels": None,
    "qk_layernorm": False, "qk_l2_norm": False, "qkv_bias": False, "tied_embeddings": False,
    "vocab_size": None, "padded_vocab_size": None, "max_position_embeddings": None, "rope_theta": 10000.0,
    "rope_scaling": None, "nope_layer_interval": None, "sliding_window": None, "norm_eps": 1e-6,
    "dtype": "bfloat16", "moe": None, "mla": None,
}
_MOE_DEFAULTS: Dict[str, Any] = {
    "num_experts": None, "top_k": None, "ffn_hidden_size": None, "shared_expert_ffn_hidden_size": 0,
    "first_k_dense_layers": 0, "layer_freq": 1, "router_score_function": "softmax", "router_topk_scaling": 1.0,
    "router_norm_topk_prob": False, "router_expert_bias": False, "router_bias_update_rate": 0.0,
    "router_pre_softmax": False, "router_num_groups": 1, "router_group_topk": 1, "router_dtype": None,
    "aux_loss_coeff": 0.0,
}
_MLA_DEFAULTS: Dict[str, Any] = {
    "q_lora_rank": None, "kv_lora_rank": None, "qk_head_dim": None, "qk_pos_emb_head_dim": None, "v_head_dim": None,
}

# Compared by architecture_mismatches (and kept by a round trip through config.json).
_ARCH_FIELDS = (
    "family", "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
    "kv_channels", "qk_layernorm", "qk_l2_norm", "qkv_bias", "tied_embeddings", "vocab_size",
    "max_position_embeddings", "rope_theta", "rope_scaling", "nope_layer_interval", "sliding_window", "norm_eps",
)
_MOE_ARCH_FIELDS = (
    "num_experts", "top_k", "ffn_hidden_size", "shared_expert_ffn_hidden_size", "first_k_dense_layers",
    "layer_freq", "router_score_function", "router_topk_scaling", "router_norm_topk_prob", "router_expert_bias",
    "router_num_groups", "router_group_topk",
)
_MLA_ARCH_FIELDS = tuple(_MLA_DEFAULTS)


def _plain(value: Any) -> Any:
    """Containers (DictConfig, ListConfig, ...) as plain dicts and lists."""
    if value is None or isinstance(value, (str, bytes, int, float, bool)):
        return value
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and hasattr(value, "__len__")):
        return [_plain(v) for v in value]
    return value


def _read(obj: Any, defaults: Mapping[str, Any]) -> Dict[str, Any]:
    if isinstance(obj, Mapping):
        return {k: _plain(obj.get(k, d)) for k, d in defaults.items()}
    return {k: _plain(getattr(obj, k, d)) for k, d in defaults.items()}


def _model_fields(model_cfg: Any) -> Dict[str, Any]:
    fields = _read(model_cfg, {k: v for k, v in _MODEL_DEFAULTS.items() if k not in ("moe", "mla")})
    moe = model_cfg.get("moe") if isinstance(model_cfg, Mapping) else getattr(model_cfg, "moe", None)
    mla = model_cfg.get("mla") if isinstance(model_cfg, Mapping) else getattr(model_cfg, "mla", None)
    fields["moe"] = None if moe is None else _read(moe, _MOE_DEFAULTS)
    fields["mla"] = None if mla is None else _read(mla, _MLA_DEFAULTS)
    return fields


def _spec(family: Any) -> _Family:
    if family not in _SPECS:
        raise ValueError(f"unknown model family {family!r}; supported: {', '.join(FAMILIES)}")
    return _SPECS[family]



# ---------------------------------------------------------------------------------------------
# Rope and small helpers
# ---------------------------------------------------------------------------------------------

_MISSING = object()


def _get(hf: Mapping[str, Any], *keys: str, default: Any = _MISSING) -> Any:
    for key in keys:
        if hf.get(key) is not None:
            return hf[key]
    if default is _MISSING:
        model_type = hf.get("model_type", "?")
        raise ValueError(f"config.json (model_type {model_type}) has no {' / '.join(keys)}")
    return default


def _norm_rope(rope: Any) -> Optional[Dict[str, Any]]:
    """rope_scaling in one spelling: `rope_type` (not `type`), no rope_theta, None for plain rope."""
    if not rope:
        return None
    rope = dict(_plain(rope))
    rope_type = rope.pop("rope_type", None) or rope.pop("type", None) or "default"
    rope.pop("type", None)
    rope.pop("rope_theta", None)  # transformers >= 5 keeps the base inside rope_parameters
    if rope_type == "default" and not rope:
        return None
    return {"rope_type": rope_type, **rope}


def _rope_from_hf(hf: Mapping[str, Any], default_theta: float) -> Tuple[float, Optional[Dict[str, Any]]]:
    theta = hf.get("rope_theta")
    scaling = hf.get("rope_scaling")
    params = hf.get("rope_parameters")  # transformers >= 5 writes this instead of the two above
    if isinstance(params, Mapping) and params:
        if all(isinstance(v, Mapping) for v in params.values()):  # per layer type
            params = params.get("full_attention") or next(iter(params.values()))
        theta = params.get("rope_theta", theta)
        scaling = params
    return float(theta if theta is not None else default_theta), _norm_rope(scaling)


def _nope_interval(no_rope_layers: List[int], num_layers: int) -> Optional[int]:
    """Llama-4's no_rope_layers (1: rope, 0: no rope) as "every N-th layer without rope"."""
    flags = [int(x) for x in no_rope_layers[:num_layers]]
    if all(flags):
        return None
    for n in range(1, num_layers + 1):
        if flags == [int((i + 1) % n != 0) for i in range(num_layers)]:
            return n
    raise ValueError(
        f"config.json's no_rope_layers {flags} is not 'every N-th layer without rope'; "
        "ModelConfig.nope_layer_interval cannot describe it"
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (a == b and type(a) is type(b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=0.0)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


