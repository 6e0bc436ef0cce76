"""Where the prunable parts of a Hugging Face decoder live (Llama / Qwen2 / Qwen3 /
Qwen3-MoE / DeepSeek-V3 layouts in transformers 5): the decoder layers, and per layer the
attention, the dense MLP or the MoE block (fused `experts`, `gate` router, optional
`shared_experts`)."""

from __future__ import annotations

from typing import Optional


def decoder(model):
    """The base model holding `layers`, `embed_tokens` and the final `norm`."""
    base = getattr(model, "model", model)
    if not hasattr(base, "layers"):
        raise TypeError(f"{type(model).__name__}: no decoder layers at model.model.layers; not a supported causal LM")
    return base


def layers(model):
    return decoder(model).layers


def is_mla(attn) -> bool:
    return hasattr(attn, "kv_a_proj_with_mqa")


def moe_block(layer) -> Optional[object]:
    """The layer's MoE block (with fused `experts` and a `gate` router), or None for a dense MLP."""
    mlp = layer.mlp
    return mlp if hasattr(mlp, "experts") and hasattr(mlp, "gate") else None


def dense_mlp(layer) -> Optional[object]:
    mlp = layer.mlp
    return mlp if hasattr(mlp, "down_proj") and not hasattr(mlp, "experts") else None


def head_dim(model) -> int:
    conf = model.config
    return getattr(conf, "head_dim", None) or conf.hidden_size // conf.num_attention_heads
