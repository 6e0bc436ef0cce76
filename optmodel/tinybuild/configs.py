"""The transformers config of each tiny model (sizes chosen so every linear input is a
multiple of 128; the builder asserts it)."""

from __future__ import annotations

from optmodel.tinybuild.constants import MODEL_NAMES, VOCAB_SIZE

# Attention implementation for training and measuring: gpt-oss's attention sinks have no
# sdpa path in transformers.
ATTN_IMPLEMENTATION = {"tiny_gpt_oss": "eager"}


def _special_ids(tokenizer) -> dict:
    return dict(
        vocab_size=VOCAB_SIZE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=1024,
    )


def model_config(name: str, tokenizer):
    """The transformers config of one tiny model."""
    import torch
    from transformers import DeepseekV3Config, GptOssConfig, Llama4TextConfig, LlamaConfig, Qwen3Config, Qwen3MoeConfig

    common = _special_ids(tokenizer)
    attn = dict(num_hidden_layers=4, hidden_size=128, num_attention_heads=4)
    if name in ("tiny_qwen3", "tiny_qwen3_teacher"):
        # the teacher of the bundled distillation pair: tiny_qwen3 at twice the depth, so
        # depth pruning to 4 layers gives a student of tiny_qwen3's shape
        if name == "tiny_qwen3_teacher":
            attn["num_hidden_layers"] = 8
        cfg = Qwen3Config(
            **common, **attn, intermediate_size=384, num_key_value_heads=2, head_dim=32,
            tie_word_embeddings=False, rope_theta=1e6, rms_norm_eps=1e-6,
        )
    elif name == "tiny_llama":
        cfg = LlamaConfig(
            **common, **attn, intermediate_size=384, num_key_value_heads=2, head_dim=32,
            tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 256},
        )
    elif name == "tiny_qwen3_moe":
        cfg = Qwen3MoeConfig(
            **common, **attn, intermediate_size=384, num_key_value_heads=2, head_dim=32,
            num_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
            norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
            tie_word_embeddings=False, router_aux_loss_coef=0.001, rope_theta=1e6,
            rms_norm_eps=1e-6,
        )
    elif name == "tiny_deepseek":
        # transformers 5.x DeepseekV3Config: routing is always sigmoid (no `scoring_func`
        # attribute) with an `e_score_correction_bias` buffer; rope via `rope_theta`.
        cfg = DeepseekV3Config(
            **common, **attn, intermediate_size=384, first_k_dense_replace=1,
            num_key_value_heads=4, q_lora_rank=128, kv_lora_rank=128,
            qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=32,
            n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
            n_shared_experts=1, n_group=1, topk_group=1, routed_scaling_factor=2.5,
            norm_topk_prob=True, rope_theta=10000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=False,
        )
    elif name == "tiny_llama4":
        # The text model of Llama-4 (Llama4ForCausalLM): Maverick-style alternating dense
        # (layers 0, 2) and MoE (1, 3) layers, top-1 sigmoid routing applied to the expert
        # input plus a shared expert, no rope on every 4th layer (layer 3), qk L2 norm on the
        # rope layers, llama3 rope scaling, interleaved (complex) rotary pairs. Chunked
        # attention and attention-temperature tuning keep Llama-4's 8192: inactive below 8192 tokens.
        cfg = Llama4TextConfig(
            **common, **attn, num_key_value_heads=2, head_dim=32,
            intermediate_size=128, intermediate_size_mlp=384,
            num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2,
            no_rope_layer_interval=4, use_qk_norm=True, attention_chunk_size=8192,
            attn_temperature_tuning=True, floor_scale=8192, attn_scale=0.1,
            router_aux_loss_coef=0.001, tie_word_embeddings=False, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 256},
        )
    elif name == "tiny_gpt_oss":
        # gpt-oss at toy size: sliding-window (32) attention on even layers, full on odd ones,
        # learned attention sinks, q/k/v/o and router / expert biases, clamped SwiGLU
        # (limit 7.0, alpha 1.702, up + 1) with interleaved gate/up columns, 8 experts top-2,
        # yarn rope (factor 4 over 256 positions). transformers runs it with eager attention.
        cfg = GptOssConfig(
            **common, **attn, num_key_value_heads=2, head_dim=32, intermediate_size=128,
            num_local_experts=8, num_experts_per_tok=2, sliding_window=32,
            layer_types=["sliding_attention", "full_attention"] * 2, attention_bias=True,
            router_aux_loss_coef=0.001, tie_word_embeddings=False, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0,
                             "original_max_position_embeddings": 256, "beta_fast": 32.0,
                             "beta_slow": 1.0, "truncate": False},
        )
    else:
        raise ValueError(f"unknown tiny model {name!r}; choose from {MODEL_NAMES}")
    cfg.dtype = torch.bfloat16
    return cfg
