"""MoE blocks of config.json per family style (Qwen3-MoE, Llama-4, DeepSeek / Kimi, gpt-oss),
both ways, and DeepSeek's MLA keys."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping

from optmodel.facts.hf_families import (
    _get,
)

# A config.json without its aux-loss key means the default of the model's config class:
# 0.001 in transformers' Qwen3-MoE, Llama-4 and gpt-oss configs and in DeepSeek's own
# configuration_deepseek.py (Kimi-K2 ships it), not 0.
AUX_LOSS_DEFAULT = 1e-3

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
        "router_dtype": "fp32",  # transformers' Qwen3-MoE takes the router softmax in fp32
        "aux_loss_coeff": float(hf.get("router_aux_loss_coef", AUX_LOSS_DEFAULT)),
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
        "aux_loss_coeff": float(hf.get("router_aux_loss_coef", AUX_LOSS_DEFAULT)),
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
        "aux_loss_coeff": float(hf.get("aux_loss_alpha", AUX_LOSS_DEFAULT)),
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
        "aux_loss_coeff": float(hf.get("router_aux_loss_coef", AUX_LOSS_DEFAULT)),
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

