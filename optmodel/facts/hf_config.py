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

from typing import Any, Dict, List, Mapping, Tuple

from optmodel.facts.hf_families import (
    LLAMA4_ATTENTION_CHUNK_SIZE, _ARCH_FIELDS, _MLA_ARCH_FIELDS,
    _MLA_DEFAULTS, _MODEL_DEFAULTS, _MODEL_TYPES, _MOE_ARCH_FIELDS,
    _MOE_DEFAULTS, _REMOTE_CODE_MODEL_TYPE, _SPECS, _fmt,
    _get, _model_fields, _nope_interval, _norm_rope,
    _plain, _rope_from_hf, _same, _spec,
)
from optmodel.facts.hf_moe import (
    _MLA_KEYS, _MOE_FROM_HF, _MOE_TO_HF,
)

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
