"""optmodel's `model=` config -> megatron-core TransformerConfig, layer spec and GPTModel.

The one place that maps our architecture fields onto megatron-core's names (dense, GQA,
qk-layernorm, MoE with shared experts / dense first layers / sigmoid router with expert
bias, MLA). Transformer-Engine layer specs when TE is importable (GPU images), the
local (pure megatron-core) spec otherwise.
"""

from __future__ import annotations

import logging
from typing import Any, List, Optional

from optmodel.backends.megatron_cpu import apply_no_te_fixes, tensor_cuda_is_identity
from optmodel.backends.megatron_families import (adjust_layer_spec, family_config_kwargs, moe_layer_flags, set_yarn_attributes)
from optmodel.facts.layout import expert_tensor_size
from optmodel.facts.machine import transformer_engine_usable

log = logging.getLogger("optmodel")

TORCH_DTYPES = ("float32", "bfloat16", "float16")


def moe_layer_pattern(model_cfg) -> Optional[List[int]]:
    """1 for an MoE layer, 0 for a dense one (megatron's moe_layer_freq as a list)."""
    if model_cfg.moe is None:
        return None

    return moe_layer_flags(model_cfg)


def _moe_kwargs(model_cfg, parallel_cfg, token_dispatcher: str) -> dict:
    moe = model_cfg.moe
    if moe is None:
        return {}
    softmax = moe.router_score_function == "softmax"
    return {
        "num_moe_experts": moe.num_experts,
        "moe_router_topk": moe.top_k,
        "moe_ffn_hidden_size": moe.ffn_hidden_size,
        "moe_shared_expert_intermediate_size": moe.shared_expert_ffn_hidden_size or None,
        "moe_layer_freq": moe_layer_pattern(model_cfg),
        "moe_router_score_function": moe.router_score_function,
        # Megatron's softmax router normalizes over the top-k unless scores are taken
        # before the top-k ("pre-softmax"): HF's norm_topk_prob=False is pre-softmax.
        # gpt-oss takes the softmax of the top-k logits: megatron's default order.
        "moe_router_pre_softmax": bool(
            moe.router_pre_softmax
            or (softmax and not moe.router_norm_topk_prob and model_cfg.family != "gpt_oss")
        ),
        "moe_router_topk_scaling_factor": moe.router_topk_scaling if moe.router_topk_scaling != 1.0 else None,
        "moe_router_enable_expert_bias": bool(moe.router_expert_bias),
        "moe_router_bias_update_rate": moe.router_bias_update_rate,
        "moe_router_num_groups": moe.router_num_groups if moe.router_num_groups > 1 else None,
        "moe_router_group_topk": moe.router_group_topk if moe.router_num_groups > 1 else None,
        "moe_router_dtype": moe.router_dtype,
        "moe_aux_loss_coeff": 0.0,  # post-training: no load-balancing loss in the forward
        "moe_router_load_balancing_type": "none",
        "moe_token_dispatcher_type": token_dispatcher,
        "moe_grouped_gemm": False,  # per-expert Linear modules: what ModelOpt's importer maps
        "expert_model_parallel_size": parallel_cfg.expert,
        "expert_tensor_parallel_size": expert_tensor_size(parallel_cfg),
    }


def _mla_kwargs(model_cfg) -> dict:
    mla = model_cfg.mla
    rope = dict(model_cfg.rope_scaling or {})
    kwargs = {
        "q_lora_rank": mla.q_lora_rank,
        "kv_lora_rank": mla.kv_lora_rank,
        "qk_head_dim": mla.qk_head_dim,
        "qk_pos_emb_head_dim": mla.qk_pos_emb_head_dim,
        "v_head_dim": mla.v_head_dim,
        "rotary_base": model_cfg.rope_theta,
    }
    if rope.get("rope_type") == "yarn":
        kwargs.update(
            rope_type="yarn",
            rotary_scaling_factor=rope.get("factor", 1.0),
            original_max_position_embeddings=rope.get("original_max_position_embeddings", 4096),
            beta_fast=rope.get("beta_fast", 32),
            beta_slow=rope.get("beta_slow", 1),
            mscale=rope.get("mscale", 1.0),
            mscale_all_dim=rope.get("mscale_all_dim", 0.0),
        )
    else:
        kwargs.update(rope_type="rope")
    return kwargs


def transformer_config(
    model_cfg,
    parallel_cfg,
    dtype: str = "float32",
    cpu_init: bool = True,
    token_dispatcher: str = "allgather",
    init_weights: bool = True,
):
    """A TransformerConfig (MLATransformerConfig for MLA models) for this model and layout."""
    import torch
    import torch.nn.functional as F
    from megatron.core.transformer.transformer_config import MLATransformerConfig, TransformerConfig

    torch_dtype = getattr(torch, dtype)
    kwargs: dict[str, Any] = dict(
        num_layers=model_cfg.num_layers,
        hidden_size=model_cfg.hidden_size,
        ffn_hidden_size=model_cfg.ffn_hidden_size,
        num_attention_heads=model_cfg.num_attention_heads,
        num_query_groups=model_cfg.num_query_groups,
        kv_channels=model_cfg.kv_channels,
        normalization="RMSNorm",
        layernorm_epsilon=model_cfg.norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=bool(model_cfg.qkv_bias),
        qk_layernorm=bool(model_cfg.qk_layernorm),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        params_dtype=torch_dtype,
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        tensor_model_parallel_size=parallel_cfg.tensor,
        pipeline_model_parallel_size=parallel_cfg.pipeline,
        context_parallel_size=parallel_cfg.context,
        sequence_parallel=bool(parallel_cfg.sequence_parallel),
        num_layers_in_first_pipeline_stage=parallel_cfg.pipeline_first_stage_layers,
        num_layers_in_last_pipeline_stage=parallel_cfg.pipeline_last_stage_layers,
        pipeline_dtype=torch_dtype,
        use_cpu_initialization=cpu_init,
        # False when the weights are about to be loaded: parameters are allocated but not
        # randomly initialized (minutes saved per stage of a 1T-parameter model).
        perform_initialization=init_weights,
        # The schedule's p2p exchanges fixed-shape activations: [seq, micro batch, hidden].
        variable_seq_lengths=False,
        persist_layer_norm=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
    )
    kwargs.update(_moe_kwargs(model_cfg, parallel_cfg, token_dispatcher))
    kwargs.update(family_config_kwargs(model_cfg))
    if model_cfg.mla is not None:
        kwargs.pop("num_query_groups")
        # MLA's q_a / kv_a RMSNorms are megatron's "qk layernorm" of the MLA spec.
        kwargs["qk_layernorm"] = True
        kwargs.update(_mla_kwargs(model_cfg))
        return MLATransformerConfig(**kwargs)
    config = TransformerConfig(**kwargs)
    if dict(model_cfg.rope_scaling or {}).get("rope_type") == "yarn":
        set_yarn_attributes(config, model_cfg)
    return config


def _mla_local_core_attention():
    """megatron-core's local DotProductAttention for MLA layers.

    MLASelfAttention builds its core attention with k_channels / v_channels (query-key
    head dim 192 vs value head dim 128 for DeepSeek-V3), which only TE's attention
    accepts in megatron-core 0.16; the local one computes the same thing from the tensor
    shapes, so it only has to accept those arguments. Its output width is heads x
    kv_channels, which equals heads x v_head_dim for every MLA model optmodel ships.
    """
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    class MLADotProductAttention(DotProductAttention):
        def __init__(self, config, *args, k_channels=None, v_channels=None, **kwargs):
            if v_channels is not None and v_channels != config.kv_channels:
                raise ValueError(
                    f"local MLA attention needs model.kv_channels == mla.v_head_dim "
                    f"({config.kv_channels} != {v_channels})"
                )
            super().__init__(config, *args, **kwargs)

    return MLADotProductAttention


def layer_spec(config, use_te: Optional[bool] = None, qk_l2_norm: bool = False, model_cfg=None):
    """The decoder block spec: TE modules when TE imports, megatron-core's local ones otherwise."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec

    use_te = transformer_engine_usable() if use_te is None else use_te
    if not use_te:
        apply_no_te_fixes()
    spec = get_gpt_decoder_block_spec(
        config, use_transformer_engine=use_te, normalization="RMSNorm", qk_l2_norm=qk_l2_norm
    )
    if not use_te and config.multi_latent_attention:
        from megatron.core.post_training.modelopt.layers import Linear

        core = _mla_local_core_attention()
        for layer in spec.layer_specs:
            attn = layer.submodules.self_attention.submodules
            attn.core_attention = core
            # The local spec splits MLA's down-projections over TP (ColumnParallelLinear);
            # the TE spec replicates them, and so do ModelOpt's importer / exporter and the
            # dry-run plan. megatron-core's replicated local Linear keeps TP > 1 consistent.
            attn.linear_q_down_proj = Linear
            attn.linear_kv_down_proj = Linear
    if model_cfg is not None:
        adjust_layer_spec(spec, config, model_cfg)
    return spec


def _set_llama3_rope(model, rope: dict) -> None:
    """Llama-3 rope scaling with the checkpoint's own parameters.

    GPTModel only exposes the scaling factor and assumes Llama-3.1's original context
    (8192) and frequency factors; recompute with the model's values through
    megatron-core's own formula.
    """
    rotary = getattr(model, "rotary_pos_emb", None)
    if rotary is None:  # not the first stage's business: every stage has rotary, but be safe
        return
    import torch

    dim = rotary.inv_freq.numel() * 2
    base_freq = 1.0 / (model.rotary_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    rotary.inv_freq = rotary._apply_scaling(
        base_freq.to(rotary.inv_freq.device),
        factor=rope["factor"],
        low_freq_factor=rope.get("low_freq_factor", 1.0),
        high_freq_factor=rope.get("high_freq_factor", 4.0),
        original_max_position_embeddings=rope.get("original_max_position_embeddings", 8192),
    )


def build_gpt_model(model_cfg, parallel_cfg, dtype: str = "float32", use_te: Optional[bool] = None,
                    token_dispatcher: str = "allgather", cpu_init: bool = True, init_weights: bool = True):
    """This rank's GPTModel (its pipeline stage, its TP/EP shards). Needs init_model_parallel first."""
    from megatron.core.models.gpt import GPTModel

    config = transformer_config(model_cfg, parallel_cfg, dtype=dtype, cpu_init=cpu_init,
                                token_dispatcher=token_dispatcher, init_weights=init_weights)
    spec = layer_spec(config, use_te=use_te, qk_l2_norm=bool(model_cfg.qk_l2_norm), model_cfg=model_cfg)
    rope = dict(model_cfg.rope_scaling or {})
    vocab = model_cfg.padded_vocab_size or model_cfg.vocab_size
    with tensor_cuda_is_identity():
        model = _gpt_model(GPTModel, config, spec, vocab, model_cfg, rope)
    if rope.get("rope_type") == "llama3" and model_cfg.mla is None:
        model.rotary_base = model_cfg.rope_theta
        _set_llama3_rope(model, rope)
    return model


def _gpt_model(GPTModel, config, spec, vocab, model_cfg, rope):
    from megatron.core import parallel_state

    return GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=vocab,
        max_sequence_length=model_cfg.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=False,  # gather vocab shards: callers get full logits
        share_embeddings_and_output_weights=bool(model_cfg.tied_embeddings),
        position_embedding_type="yarn" if rope.get("rope_type") == "yarn" and model_cfg.mla is None else "rope",
        rotary_base=int(model_cfg.rope_theta),
        rope_scaling=rope.get("rope_type") == "llama3",
        rope_scaling_factor=float(rope.get("factor", 8.0)),
    )
