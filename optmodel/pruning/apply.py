"""Prune a Hugging Face decoder to an export_config with importance scores: the most
important layers, and in every kept layer its most important channels / heads / groups /
experts (each layer ranked on its own, the same count everywhere, as mcore_minitron
prunes homogeneously)."""

from __future__ import annotations

from typing import Dict, List

import torch

from optmodel.pruning import layout, slicing
from optmodel.pruning.depth import layers_to_keep


def top(scores: torch.Tensor, n: int) -> List[int]:
    """Indices of the `n` highest scores, in index order (stable for equal scores)."""
    order = torch.argsort(scores.float(), descending=True, stable=True)[:n]
    return sorted(int(i) for i in order)


def attention_keep(head_scores: torch.Tensor, group_scores: torch.Tensor, heads: int, groups: int):
    """(heads, groups) to keep: the best `groups` KV groups, then in each the best
    heads // groups of its own query heads, so every group keeps the same head count."""
    total_heads, total_groups = head_scores.numel(), group_scores.numel()
    rep = total_heads // total_groups
    kept_groups = top(group_scores, groups)
    per_group = heads // groups
    kept_heads = []
    for g in kept_groups:
        own = head_scores[g * rep:(g + 1) * rep]
        kept_heads += [g * rep + i for i in top(own, per_group)]
    return kept_heads, kept_groups


def prune(model, scores: Dict[str, torch.Tensor], export_config: Dict[str, int]) -> None:
    """Slice `model` in place to `export_config` (Megatron / ModelOpt names)."""
    conf = model.config
    layers = layout.layers(model)
    original_ids = list(range(len(layers)))
    if "num_layers" in export_config:
        original_ids = layers_to_keep(scores["layers"], export_config["num_layers"])
        slicing.drop_layers(model, original_ids)
    heads = export_config.get("num_attention_heads", conf.num_attention_heads)
    groups = export_config.get("num_query_groups", getattr(conf, "num_key_value_heads", None))
    hd = layout.head_dim(model)
    for layer, i in zip(layout.layers(model), original_ids):
        if {"num_attention_heads", "num_query_groups"} & export_config.keys():
            kept_heads, kept_groups = attention_keep(scores[f"{i}.heads"], scores[f"{i}.groups"], heads, groups)
            slicing.slice_attention(layer.self_attn, kept_heads, kept_groups, hd)
        moe = layout.moe_block(layer)
        if moe is None:
            if "ffn_hidden_size" in export_config:
                slicing.slice_mlp(layer.mlp, top(scores[f"{i}.ffn"], export_config["ffn_hidden_size"]))
            continue
        expert_ffn = scores[f"{i}.expert_ffn"]
        if "num_moe_experts" in export_config:
            kept = top(scores[f"{i}.experts"], export_config["num_moe_experts"])
            slicing.slice_experts(moe, kept)
            expert_ffn = expert_ffn[kept]
        if "moe_ffn_hidden_size" in export_config:
            n = export_config["moe_ffn_hidden_size"]
            slicing.slice_expert_ffn(moe.experts, [top(row, n) for row in expert_ffn])
        shared = getattr(moe, "shared_experts", None)
        shared_width = _shared_width(conf, export_config)
        if shared is not None and shared_width is not None:
            slicing.slice_mlp(shared, top(scores[f"{i}.shared_ffn"], shared_width))
    if "hidden_size" in export_config:
        slicing.slice_hidden(model, top(scores["hidden"], export_config["hidden_size"]))
    slicing.update_config(model, {
        "hidden_size": export_config.get("hidden_size", conf.hidden_size),
        "ffn_hidden_size": export_config.get("ffn_hidden_size", conf.intermediate_size),
        "num_attention_heads": heads,
        **({"num_query_groups": groups} if groups is not None else {}),
        **({"num_experts": export_config["num_moe_experts"]} if "num_moe_experts" in export_config else {}),
        **({"moe_ffn_hidden_size": export_config["moe_ffn_hidden_size"]} if "moe_ffn_hidden_size" in export_config else {}),
    })
    if "moe_shared_expert_intermediate_size" in export_config and hasattr(conf, "shared_expert_intermediate_size"):
        conf.shared_expert_intermediate_size = export_config["moe_shared_expert_intermediate_size"]


def _shared_width(conf, export_config):
    """The pruned shared-expert width, if it changes: set directly, or (DeepSeek) derived
    from the routed experts' width times n_shared_experts."""
    if "moe_shared_expert_intermediate_size" in export_config:
        return export_config["moe_shared_expert_intermediate_size"]
    if "moe_ffn_hidden_size" in export_config and getattr(conf, "n_shared_experts", None):
        return export_config["moe_ffn_hidden_size"] * conf.n_shared_experts
    return None
