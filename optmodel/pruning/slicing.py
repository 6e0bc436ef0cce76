"""Module surgery on a Hugging Face decoder: keep the chosen layers, MLP channels, heads and
query groups, hidden channels, experts (router rows with them) and MoE FFN channels, and
state the new sizes in the model's config, so `save_pretrained` writes a checkpoint that
transformers reloads with no missing or unexpected weights.

Indices are always kept in model order; every function slices in place.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from optmodel.pruning import layout

# Linear layers that read the hidden state (input columns) / write it (output rows).
READS_HIDDEN = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "q_a_proj", "kv_a_proj_with_mqa")
WRITES_HIDDEN = ("o_proj", "down_proj")


def _idx(keep: Sequence[int], device) -> torch.Tensor:
    return torch.as_tensor(sorted(int(i) for i in keep), dtype=torch.long, device=device)


def _set(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(tensor.contiguous(), requires_grad=old.requires_grad))


def slice_linear(linear: nn.Linear, out_keep: Optional[Sequence[int]] = None, in_keep: Optional[Sequence[int]] = None) -> None:
    w = linear.weight.data
    if out_keep is not None:
        idx = _idx(out_keep, w.device)
        w = w.index_select(0, idx)
        if linear.bias is not None:
            _set(linear, "bias", linear.bias.data.index_select(0, idx))
        linear.out_features = len(idx)
    if in_keep is not None:
        w = w.index_select(1, _idx(in_keep, w.device))
        linear.in_features = w.shape[1]
    _set(linear, "weight", w)


def slice_mlp(mlp: nn.Module, keep: Sequence[int]) -> None:
    """A SwiGLU MLP (gate_proj, up_proj, down_proj) to the channels `keep`."""
    slice_linear(mlp.gate_proj, out_keep=keep)
    slice_linear(mlp.up_proj, out_keep=keep)
    slice_linear(mlp.down_proj, in_keep=keep)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def slice_attention(attn: nn.Module, heads: Sequence[int], groups: Sequence[int], head_dim: int) -> None:
    """Keep query heads `heads` and KV heads `groups`; every kept head's KV head must be
    kept, with the same number of heads in each kept group (GQA stays valid)."""
    rows = lambda units: [u * head_dim + d for u in sorted(units) for d in range(head_dim)]  # noqa: E731
    slice_linear(attn.q_proj, out_keep=rows(heads))
    slice_linear(attn.k_proj, out_keep=rows(groups))
    slice_linear(attn.v_proj, out_keep=rows(groups))
    slice_linear(attn.o_proj, in_keep=rows(heads))
    attn.num_key_value_groups = len(heads) // len(groups)


def slice_experts(moe: nn.Module, keep: Sequence[int]) -> None:
    """Keep experts `keep` of a fused MoE block, with their router rows (and DeepSeek's
    expert-score correction bias)."""
    experts, gate = moe.experts, moe.gate
    idx = _idx(keep, experts.gate_up_proj.device)
    _set(experts, "gate_up_proj", experts.gate_up_proj.data.index_select(0, idx))
    _set(experts, "down_proj", experts.down_proj.data.index_select(0, idx))
    experts.num_experts = len(idx)
    _set(gate, "weight", gate.weight.data.index_select(0, idx))
    gate.num_experts = len(idx)
    if hasattr(gate, "n_routed_experts"):
        gate.n_routed_experts = len(idx)
    bias = getattr(gate, "e_score_correction_bias", None)
    if bias is not None:
        gate.e_score_correction_bias = bias.index_select(0, idx)


def slice_expert_ffn(experts: nn.Module, keep_per_expert: Sequence[Sequence[int]]) -> None:
    """Each expert to its own kept channels (same count for all: one config value)."""
    inter = experts.down_proj.shape[-1]
    gate_up, down = [], []
    for e, keep in enumerate(keep_per_expert):
        idx = _idx(keep, experts.down_proj.device)
        gate_up.append(experts.gate_up_proj.data[e].index_select(0, torch.cat([idx, idx + inter])))
        down.append(experts.down_proj.data[e].index_select(1, idx))
    _set(experts, "gate_up_proj", torch.stack(gate_up))
    _set(experts, "down_proj", torch.stack(down))
    experts.intermediate_dim = len(keep_per_expert[0])


def slice_hidden(model: nn.Module, keep: Sequence[int]) -> None:
    """Every tensor that reads or writes the residual stream to the channels `keep`:
    embeddings, all hidden-size norms, the linears around it, routers, fused experts and
    lm_head (re-tied to the embeddings when the model ties them)."""
    base = layout.decoder(model)
    idx = _idx(keep, base.embed_tokens.weight.device)
    _set(base.embed_tokens, "weight", base.embed_tokens.weight.data.index_select(1, idx))
    base.embed_tokens.embedding_dim = len(idx)
    norms = [base.norm] + [n for layer in base.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    for norm in norms:
        _set(norm, "weight", norm.weight.data.index_select(0, idx))
    keep = idx.tolist()
    for name, module in base.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear) and leaf in READS_HIDDEN:
            slice_linear(module, in_keep=keep)
        elif isinstance(module, nn.Linear) and leaf in WRITES_HIDDEN:
            slice_linear(module, out_keep=keep)
        elif leaf == "gate" and hasattr(module, "weight") and not isinstance(module, nn.Linear):
            _set(module, "weight", module.weight.data.index_select(1, idx))  # router [experts, hidden]
            module.hidden_dim = len(keep)
        elif leaf == "experts" and hasattr(module, "gate_up_proj"):
            _set(module, "gate_up_proj", module.gate_up_proj.data.index_select(2, idx))
            _set(module, "down_proj", module.down_proj.data.index_select(1, idx))
            module.hidden_dim = len(keep)
    if model.config.tie_word_embeddings:
        model.lm_head.weight = base.embed_tokens.weight
    else:
        slice_linear(model.lm_head, in_keep=keep)


def drop_layers(model: nn.Module, keep: Sequence[int]) -> None:
    """Keep decoder layers `keep` (original indices), renumbered for the KV cache, with the
    config's per-layer lists (layer_types, Qwen3-MoE's dense layers) following them."""
    base, conf = layout.decoder(model), model.config
    keep = sorted(keep)
    kept = [base.layers[i] for i in keep]
    dense = [new for new, layer in enumerate(kept) if layout.moe_block(layer) is None]
    for new, layer in enumerate(kept):
        layer.self_attn.layer_idx = new
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new
    base.layers = nn.ModuleList(kept)
    conf.num_hidden_layers = len(kept)
    if isinstance(getattr(conf, "layer_types", None), list):
        conf.layer_types = [conf.layer_types[i] for i in keep]
    if hasattr(conf, "mlp_only_layers") and hasattr(conf, "decoder_sparse_step"):
        conf.mlp_only_layers, conf.decoder_sparse_step = dense, 1  # states the kept pattern exactly
    if hasattr(conf, "first_k_dense_replace"):
        conf.first_k_dense_replace = len(dense)  # dense layers are a prefix and stay one


def update_config(model: nn.Module, sizes: Dict[str, int]) -> None:
    """The HF config fields of the pruned widths (ModelConfig names in, HF names out)."""
    conf = model.config
    conf.head_dim = layout.head_dim(model)  # explicit: hidden / heads no longer gives it
    hf_names = {
        "hidden_size": ["hidden_size"],
        "ffn_hidden_size": ["intermediate_size"],
        "num_attention_heads": ["num_attention_heads"],
        "num_query_groups": ["num_key_value_heads"],
        "num_experts": ["num_experts", "num_local_experts", "n_routed_experts"],
        "moe_ffn_hidden_size": ["moe_intermediate_size"],
    }
    for key, value in sizes.items():
        for name in hf_names.get(key, []):
            if name in conf.to_dict() or hasattr(conf, name):
                setattr(conf, name, value)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_ids(model: nn.Module) -> List[int]:
    return list(range(len(layout.layers(model))))
