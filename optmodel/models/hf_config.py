"""The one mapping between optmodel's ModelConfig and Hugging Face config.json.

    to_hf_config_dict(model_cfg)         ModelConfig -> config.json content
    from_hf_config_dict(hf)              config.json -> ModelConfig fields (family + architecture)
    architecture_mismatches(model, hf)   one sentence per architecture field that disagrees
    to_transformers_config(model_cfg)    ModelConfig -> transformers PretrainedConfig (lazy import)

Imports neither torch nor transformers at module level: config validation imports this.

Conventions, where config.json and ModelConfig count differently:
- config.json has one vocabulary number, the embedding rows; it is compared with
  `padded_vocab_size` when that is set, else with `vocab_size`.
- `num_query_groups` is None for MLA families; a None elsewhere means one group per head.
- `moe.layer_freq` N with `moe.first_k_dense_layers` K: layer i is MoE when i >= K and
  (i + 1) % N == 0 (Hugging Face's Qwen3-MoE `decoder_sparse_step` and Llama-4
  `interleave_moe_layer_step` rule: Maverick's MoE layers are 1, 3, 5, ...).
- MLA: `kv_channels` is the non-rotary query/key head dim (`mla.qk_head_dim`), as Megatron counts it.
- Family traits config.json does not spell out (Qwen3's qk-layernorm, Qwen2's qkv bias, a
  DeepSeek-V3 checkpoint without `scoring_func`, ...) are read back as the family's value, so
  a model config that contradicts its family is reported like any other mismatch, and
  `to_hf_config_dict` refuses a config its family's config.json cannot express.
- Not compared (training knobs, not architecture): name, checkpoint, tiny, dtype,
  trust_remote_code, moe.router_pre_softmax, moe.router_dtype, moe.router_bias_update_rate,
  moe.aux_loss_coeff.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

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
# MoE blocks, per family style
# ---------------------------------------------------------------------------------------------


def _moe_layer_ids(num_layers: int, first_k: int, freq: int) -> List[int]:
    return [i for i in range(first_k, num_layers) if (i + 1) % freq == 0]


def _first_k_dense(moe_layers: List[int], num_layers: int, freq: int, key: str) -> int:
    """The K of "first K layers dense, then MoE on every freq-th layer" that gives `moe_layers`."""
    wanted = sorted(int(i) for i in moe_layers)
    for k in range(num_layers + 1):
        if _moe_layer_ids(num_layers, k, freq) == wanted:
            return k
    raise ValueError(
        f"config.json's {key} {wanted} is not 'the first K layers dense, then MoE on every "
        f"{freq}-th layer'; ModelConfig cannot describe that layout"
    )


def _qwen3_moe_to_hf(moe: Dict[str, Any], m: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "num_experts": moe["num_experts"],
        "num_experts_per_tok": moe["top_k"],
        "moe_intermediate_size": moe["ffn_hidden_size"],
        "decoder_sparse_step": moe["layer_freq"],
        "mlp_only_layers": list(range(moe["first_k_dense_layers"])),
        "norm_topk_prob": moe["router_norm_topk_prob"],
        "router_aux_loss_coef": moe["aux_loss_coeff"],
    }


def _qwen3_moe_from_hf(hf: Mapping[str, Any], num_layers: int) -> Dict[str, Any]:
    step = hf.get("decoder_sparse_step") or 1
    dense = set(hf.get("mlp_only_layers") or [])
    layers = [i for i in range(num_layers) if i not in dense and (i + 1) % step == 0]
    return {
        "num_experts": _get(hf, "num_experts", "num_local_experts"),
        "top_k": _get(hf, "num_experts_per_tok"),
        "ffn_hidden_size": _get(hf, "moe_intermediate_size"),
        "shared_expert_ffn_hidden_size": 0,
        "first_k_dense_layers": _first_k_dense(layers, num_layers, step, "mlp_only_layers"),
        "layer_freq": step,
        "router_score_function": "softmax",
        "router_topk_scaling": 1.0,
        "router_norm_topk_prob": bool(hf.get("norm_topk_prob", False)),
        "router_expert_bias": False,
        "router_num_groups": 1,
        "router_group_topk": 1,
        "aux_loss_coeff": float(hf.get("router_aux_loss_coef", 0.0)),
    }


def _llama4_moe_to_hf(moe: Dict[str, Any], m: Dict[str, Any]) -> Dict[str, Any]:
    # Llama-4's shared expert has no size of its own: it is `intermediate_size`, as every expert.
    out = {
        "num_local_experts": moe["num_experts"],
        "num_experts_per_tok": moe["top_k"],
        "intermediate_size": moe["ffn_hidden_size"],
        "interleave_moe_layer_step": moe["layer_freq"],
        "router_aux_loss_coef": moe["aux_loss_coeff"],
    }
    if moe["first_k_dense_layers"]:  # interleave_moe_layer_step alone cannot say it
        out["moe_layers"] = _moe_layer_ids(m["num_layers"], moe["first_k_dense_layers"], moe["layer_freq"])
    return out


def _llama4_moe_from_hf(hf: Mapping[str, Any], num_layers: int) -> Dict[str, Any]:
    step = hf.get("interleave_moe_layer_step") or 1
    layers = hf.get("moe_layers")
    first_k = 0 if layers is None else _first_k_dense(layers, num_layers, step, "moe_layers")
    size = _get(hf, "intermediate_size")
    return {
        "num_experts": _get(hf, "num_local_experts"),
        "top_k": hf.get("num_experts_per_tok", 1),
        "ffn_hidden_size": size,
        "shared_expert_ffn_hidden_size": size,
        "first_k_dense_layers": first_k,
        "layer_freq": step,
        "router_score_function": "sigmoid",  # sigmoid of the top-k logits, no renormalization
        "router_topk_scaling": 1.0,
        "router_norm_topk_prob": False,
        "router_expert_bias": False,
        "router_num_groups": 1,
        "router_group_topk": 1,
        "aux_loss_coeff": float(hf.get("router_aux_loss_coef", 0.0)),
    }


def _deepseek_moe_to_hf(moe: Dict[str, Any], m: Dict[str, Any]) -> Dict[str, Any]:
    # The shared experts are n_shared_experts experts of the routed size.
    n_shared = moe["shared_expert_ffn_hidden_size"] // moe["ffn_hidden_size"]
    if moe["router_expert_bias"]:
        topk_method = "noaux_tc"
    else:
        topk_method = "group_limited_greedy" if moe["router_num_groups"] > 1 else "greedy"
    return {
        "n_routed_experts": moe["num_experts"],
        "num_experts_per_tok": moe["top_k"],
        "moe_intermediate_size": moe["ffn_hidden_size"],
        "n_shared_experts": n_shared,
        "first_k_dense_replace": moe["first_k_dense_layers"],
        "moe_layer_freq": moe["layer_freq"],
        "scoring_func": moe["router_score_function"],
        "topk_method": topk_method,
        "routed_scaling_factor": float(moe["router_topk_scaling"]),
        "norm_topk_prob": moe["router_norm_topk_prob"],
        "n_group": moe["router_num_groups"],
        "topk_group": moe["router_group_topk"],
        "aux_loss_alpha": moe["aux_loss_coeff"],
        "seq_aux": True,
    }


def _deepseek_moe_from_hf(hf: Mapping[str, Any], num_layers: int, v3: bool) -> Dict[str, Any]:
    # transformers' own DeepseekV3Config has no scoring_func / topk_method: its router is
    # always sigmoid with the aux-loss-free expert bias (noaux_tc).
    size = _get(hf, "moe_intermediate_size")
    method = hf.get("topk_method") or ("noaux_tc" if v3 else "greedy")
    bias = method == "noaux_tc"
    return {
        "num_experts": _get(hf, "n_routed_experts", "num_local_experts"),
        "top_k": _get(hf, "num_experts_per_tok"),
        "ffn_hidden_size": size,
        "shared_expert_ffn_hidden_size": (hf.get("n_shared_experts") or 0) * size,
        "first_k_dense_layers": hf.get("first_k_dense_replace") or 0,
        "layer_freq": hf.get("moe_layer_freq") or 1,
        "router_score_function": hf.get("scoring_func") or ("sigmoid" if v3 else "softmax"),
        "router_topk_scaling": float(hf.get("routed_scaling_factor", 1.0)),
        "router_norm_topk_prob": bool(hf.get("norm_topk_prob", False)),
        "router_expert_bias": bias,
        "router_bias_update_rate": 1e-3 if bias else 0.0,  # megatron-core's default rate
        "router_pre_softmax": True,  # DeepSeek routes on the scores of all experts
        "router_num_groups": hf.get("n_group") or 1,
        "router_group_topk": hf.get("topk_group") or 1,
        "aux_loss_coeff": float(hf.get("aux_loss_alpha", 0.0)),
    }


def _gpt_oss_moe_to_hf(moe: Dict[str, Any], m: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "num_local_experts": moe["num_experts"],
        "num_experts_per_tok": moe["top_k"],
        "intermediate_size": moe["ffn_hidden_size"],
        "router_aux_loss_coef": moe["aux_loss_coeff"],
    }


def _gpt_oss_moe_from_hf(hf: Mapping[str, Any], num_layers: int) -> Dict[str, Any]:
    return {
        "num_experts": _get(hf, "num_local_experts", "num_experts"),
        "top_k": _get(hf, "num_experts_per_tok", "experts_per_token"),
        "ffn_hidden_size": _get(hf, "intermediate_size"),
        "shared_expert_ffn_hidden_size": 0,
        "first_k_dense_layers": 0,
        "layer_freq": 1,
        "router_score_function": "softmax",  # softmax over the top-k logits
        "router_topk_scaling": 1.0,
        "router_norm_topk_prob": False,
        "router_expert_bias": False,
        "router_num_groups": 1,
        "router_group_topk": 1,
        "aux_loss_coeff": float(hf.get("router_aux_loss_coef", 0.0)),
    }


_MOE_TO_HF: Dict[str, Callable[[Dict[str, Any], Dict[str, Any]], Dict[str, Any]]] = {
    "qwen3_moe": _qwen3_moe_to_hf,
    "llama4": _llama4_moe_to_hf,
    "deepseek": _deepseek_moe_to_hf,
    "gpt_oss": _gpt_oss_moe_to_hf,
}
_MOE_FROM_HF: Dict[str, Callable[[Mapping[str, Any], int, str], Dict[str, Any]]] = {
    "qwen3_moe": lambda hf, n, fam: _qwen3_moe_from_hf(hf, n),
    "llama4": lambda hf, n, fam: _llama4_moe_from_hf(hf, n),
    "deepseek": lambda hf, n, fam: _deepseek_moe_from_hf(hf, n, v3=fam == "deepseek_v3"),
    "gpt_oss": lambda hf, n, fam: _gpt_oss_moe_from_hf(hf, n),
}

# MLA: ModelConfig field -> DeepSeek config.json key
_MLA_KEYS = {
    "q_lora_rank": "q_lora_rank",
    "kv_lora_rank": "kv_lora_rank",
    "qk_head_dim": "qk_nope_head_dim",
    "qk_pos_emb_head_dim": "qk_rope_head_dim",
    "v_head_dim": "v_head_dim",
}

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


# ---------------------------------------------------------------------------------------------
# ModelConfig -> config.json
# ---------------------------------------------------------------------------------------------


def to_hf_config_dict(model_cfg: Any, *, text_only: bool = False) -> Dict[str, Any]:
    """The config.json content of `model_cfg` (a ModelConfig as DictConfig, dataclass or dict).

    Llama-4 is written as its checkpoints are (model_type llama4, the text model under
    `text_config`, no vision_config: ModelConfig does not describe the vision tower);
    `text_only=True` writes the bare text model (llama4_text, Llama4ForCausalLM).
    Raises ValueError when the family's config.json cannot express the config.
    """
    m = _model_fields(model_cfg)
    hf = _hf_dict(m, text_only)
    problems = _diff(_arch_view(m), _arch_view(from_hf_config_dict(hf)))
    if problems:
        said = "; ".join(f"{path}={_fmt(ours)} (would read back as {_fmt(theirs)})" for path, ours, theirs in problems)
        raise ValueError(f"model={m['name']}: a {m['family']} config.json cannot express {said}")
    return hf


def _hf_dict(m: Dict[str, Any], text_only: bool) -> Dict[str, Any]:
    fam = _spec(m["family"])
    for block, needed in (("moe", bool(fam.moe)), ("mla", fam.mla)):
        if needed and m[block] is None:
            raise ValueError(f"model={m['name']}: family {m['family']} needs a model.{block} block")
    heads = m["num_attention_heads"]
    d: Dict[str, Any] = {
        "num_hidden_layers": m["num_layers"],
        "hidden_size": m["hidden_size"],
        "num_attention_heads": heads,
        # MLA has no key/value groups: transformers wants one per head
        "num_key_value_heads": heads if fam.mla else (m["num_query_groups"] or heads),
        "hidden_act": "silu",
        "max_position_embeddings": m["max_position_embeddings"],
        "rms_norm_eps": float(m["norm_eps"]),
        "tie_word_embeddings": bool(m["tied_embeddings"]),
        "vocab_size": m["padded_vocab_size"] or m["vocab_size"],  # the embedding rows
        "rope_theta": float(m["rope_theta"]),
        "rope_scaling": _norm_rope(m["rope_scaling"]),
    }
    if not fam.mla:
        d["head_dim"] = m["kv_channels"]
    if fam.ffn_key:
        d[fam.ffn_key] = m["ffn_hidden_size"]
    if fam.bias_key:
        d[fam.bias_key] = bool(m["qkv_bias"])
    if fam.model_type == "llama":
        d["mlp_bias"] = False
    if fam.qk_l2_norm_key:
        d[fam.qk_l2_norm_key] = bool(m["qk_l2_norm"])
    window = m["sliding_window"]
    if fam.sliding == "qwen":
        d.update(use_sliding_window=window is not None, sliding_window=window,
                 max_window_layers=0 if window is not None else m["num_layers"])
    elif fam.sliding == "gpt_oss":  # sliding window on the even layers, as gpt-oss
        d["sliding_window"] = window
        d["layer_types"] = [
            "sliding_attention" if window is not None and i % 2 == 0 else "full_attention"
            for i in range(m["num_layers"])
        ]
    if fam.mla and m["mla"] is not None:
        d.update({key: m["mla"][field] for field, key in _MLA_KEYS.items()})
    if fam.model_type == "deepseek_v3":
        d["num_nextn_predict_layers"] = 0  # ModelConfig describes no multi-token-prediction layer
    if fam.moe and m["moe"] is not None:
        d.update(_MOE_TO_HF[fam.moe](m["moe"], m))
    if fam.model_type == "llama4":
        interval = m["nope_layer_interval"]
        d["no_rope_layers"] = [
            int(interval is None or (i + 1) % interval != 0) for i in range(m["num_layers"])
        ]
        if interval is not None:
            d["no_rope_layer_interval"] = interval
        d["attention_chunk_size"] = LLAMA4_ATTENTION_CHUNK_SIZE

    model_type = fam.model_type
    if m["trust_remote_code"] and model_type in _REMOTE_CODE_MODEL_TYPE:
        model_type = _REMOTE_CODE_MODEL_TYPE[model_type]
    if model_type == "llama4":
        if text_only:
            return {"model_type": "llama4_text", "architectures": ["Llama4ForCausalLM"],
                    **d, "torch_dtype": m["dtype"]}
        return {
            "model_type": "llama4",
            "architectures": [fam.architecture],
            "tie_word_embeddings": d["tie_word_embeddings"],
            "torch_dtype": m["dtype"],
            "text_config": {"model_type": "llama4_text", **d},
        }
    return {"model_type": model_type, "architectures": [fam.architecture], **d, "torch_dtype": m["dtype"]}


# ---------------------------------------------------------------------------------------------
# config.json -> ModelConfig fields
# ---------------------------------------------------------------------------------------------


def from_hf_config_dict(hf: Mapping[str, Any]) -> Dict[str, Any]:
    """ModelConfig fields (family, architecture, nested moe / mla dicts or None) of a config.json.

    Accepts real checkpoints' files: Llama-4's nested text_config, Kimi-K2's model_type
    kimi_k2, DeepSeek's `type: yarn`, transformers 5's `rope_parameters`.
    """
    hf = _plain(hf)
    model_type = hf.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise ValueError(
            f"config.json has model_type {model_type!r}, which optmodel does not support; "
            f"supported: {', '.join(_MODEL_TYPES)}"
        )
    family = _MODEL_TYPES[model_type]
    fam = _SPECS[family]
    top = hf
    if model_type == "llama4":
        text = hf.get("text_config")
        if not isinstance(text, Mapping):
            raise ValueError("config.json has model_type llama4 but no text_config")
        hf = {"tie_word_embeddings": top.get("tie_word_embeddings", False), **text}

    num_layers = _get(hf, "num_hidden_layers")
    hidden = _get(hf, "hidden_size")
    heads = _get(hf, "num_attention_heads")
    rope_theta, rope_scaling = _rope_from_hf(hf, fam.default_rope_theta)
    out: Dict[str, Any] = {
        "family": family,
        "num_layers": num_layers,
        "hidden_size": hidden,
        "ffn_hidden_size": _get(hf, fam.ffn_key or "intermediate_size"),
        "num_attention_heads": heads,
        "num_query_groups": None if fam.mla else _get(hf, "num_key_value_heads", default=heads),
        "kv_channels": _get(hf, "qk_nope_head_dim") if fam.mla else _get(hf, "head_dim", default=hidden // heads),
        "qk_layernorm": False,
        "qk_l2_norm": False,
        "qkv_bias": bool(hf.get(fam.bias_key, False)) if fam.bias_key else False,
        "tied_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "vocab_size": _get(hf, "vocab_size"),
        "padded_vocab_size": None,  # config.json's vocab_size already is the embedding rows
        "max_position_embeddings": _get(hf, "max_position_embeddings"),
        "rope_theta": rope_theta,
        "rope_scaling": rope_scaling,
        "nope_layer_interval": None,
        "sliding_window": None,
        "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
        "moe": None,
        "mla": None,
    }
    out.update({k: v for k, v in fam.fixed.items() if v is not ...})
    if fam.qk_l2_norm_key:
        out["qk_l2_norm"] = bool(hf.get(fam.qk_l2_norm_key, True))  # transformers' default: on
    if fam.sliding == "qwen" and hf.get("use_sliding_window"):
        out["sliding_window"] = hf.get("sliding_window")
    elif fam.sliding == "gpt_oss":
        layer_types = hf.get("layer_types")
        if layer_types is None or "sliding_attention" in layer_types:
            out["sliding_window"] = hf.get("sliding_window")
    if model_type in ("llama4", "llama4_text"):
        if hf.get("no_rope_layers"):
            out["nope_layer_interval"] = _nope_interval(hf["no_rope_layers"], num_layers)
        else:
            out["nope_layer_interval"] = hf.get("no_rope_layer_interval", 4)
    if fam.mla:
        out["mla"] = {field: hf.get(key) for field, key in _MLA_KEYS.items()}
    if fam.moe:
        out["moe"] = {**_MOE_DEFAULTS, **_MOE_FROM_HF[fam.moe](hf, num_layers, family)}
        if fam.ffn_key is None:  # gpt-oss: no dense MLP, config.json has the expert size only
            out["ffn_hidden_size"] = out["moe"]["ffn_hidden_size"]
    if model_type in _REMOTE_CODE_MODEL_TYPE.values():
        out["trust_remote_code"] = True
    dtype = top.get("torch_dtype") or top.get("dtype") or hf.get("torch_dtype") or hf.get("dtype")
    if isinstance(dtype, str):
        out["dtype"] = dtype
    return out


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------


def _arch_view(m: Mapping[str, Any]) -> Dict[str, Any]:
    """The compared fields of ModelConfig fields `m`, flat ("moe.top_k"), normalized."""
    fam = _SPECS.get(m.get("family"))
    view = {f: m.get(f, _MODEL_DEFAULTS.get(f)) for f in _ARCH_FIELDS}
    view["vocab_size"] = m.get("padded_vocab_size") or m.get("vocab_size")
    heads = view["num_attention_heads"]
    if fam is not None and fam.mla:
        view["num_query_groups"] = None
    else:
        view["num_query_groups"] = view["num_query_groups"] or heads
    view["rope_scaling"] = _norm_rope(view["rope_scaling"])
    for block, fields, defaults in (("moe", _MOE_ARCH_FIELDS, _MOE_DEFAULTS), ("mla", _MLA_ARCH_FIELDS, _MLA_DEFAULTS)):
        sub = m.get(block)
        view[block] = None if sub is None else {f: sub.get(f, defaults[f]) for f in fields}
    return view


def _diff(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
    """(model.<path>, ours, theirs) per differing field; a block present on one side only is one entry."""
    out = []
    for key, value in ours.items():
        other = theirs.get(key)
        if key in ("moe", "mla") and value is not None and other is not None:
            out += [(f"model.{key}.{f}", value[f], other[f]) for f in value if not _same(value[f], other[f])]
        elif not _same(value, other):
            out.append((f"model.{key}", value, other))
    return out


def _block_summary(block: str, value: Mapping[str, Any]) -> str:
    if block == "moe":
        return f"{value['num_experts']} experts, top-{value['top_k']}"
    return f"kv_lora_rank {value['kv_lora_rank']}"


def architecture_mismatches(model_cfg: Any, hf: Mapping[str, Any]) -> List[str]:
    """One sentence per architecture field where `model_cfg` and a checkpoint's config.json disagree.

    Empty when they agree. Raises ValueError for a config.json optmodel cannot read
    (unknown model_type, a layout ModelConfig cannot describe).
    """
    m = _model_fields(model_cfg)
    theirs = from_hf_config_dict(hf)
    problems = []
    for path, ours_value, their_value in _diff(_arch_view(m), _arch_view(theirs)):
        if path == "model.vocab_size" and m["padded_vocab_size"]:
            path = "model.padded_vocab_size"
        if path in ("model.moe", "model.mla"):
            block = path.split(".")[1]
            kind = {"moe": "a MoE block", "mla": "an MLA block"}[block]
            if ours_value is None:
                problems.append(
                    f"{path}: the model config has no {block} block but the checkpoint's config.json "
                    f"describes {kind} ({_block_summary(block, their_value)})"
                )
            else:
                problems.append(
                    f"{path}: the model config has {kind} ({_block_summary(block, ours_value)}) but the "
                    f"checkpoint's config.json describes none"
                )
            continue
        said = (f"{path}: the model config says {_fmt(ours_value)} "
                f"but the checkpoint's config.json says {_fmt(their_value)}")
        if path == "model.family":
            said += f" (model_type {hf.get('model_type')})"
        problems.append(said)
    return problems


# ---------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------


def to_transformers_config(model_cfg: Any, *, text_only: bool = False):
    """The transformers PretrainedConfig of `model_cfg` (imports transformers)."""
    from transformers import AutoConfig

    d = to_hf_config_dict(model_cfg, text_only=text_only)
    model_type = d.pop("model_type")
    if model_type == "kimi_k2":
        # Remote-code model type: transformers' own DeepSeek-V3 builds the same architecture.
        from transformers import DeepseekV3Config

        return DeepseekV3Config(**d)
    return AutoConfig.for_model(model_type, **d)


def model_config_mismatches(ours: Any, theirs: Any) -> List[Tuple[str, Any, Any]]:
    """(model.<field>, ours, theirs) for each architecture field where two model configs differ."""
    return _diff(_arch_view(_model_fields(ours)), _arch_view(_model_fields(theirs)))


def format_value(value: Any) -> str:
    return _fmt(value)
