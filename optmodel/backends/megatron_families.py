"""Llama-4 and gpt-oss on megatron-core 0.16: their TransformerConfig knobs, per-layer
spec edits and ModelOpt import rules for the text-only Llama-4 checkpoint.

What each family needs beyond the dense / MoE / MLA mapping of megatron_spec:
- llama4: rotary pairs interleaved (transformers applies rope in complex form), no rope on
  every `nope_layer_interval`-th layer (`no_rope_freq`), the routing probability applied to
  the expert input (`moe_apply_probs_on_input`, top-1), MoE on layers (i + 1) % layer_freq
  == 0, and the qk L2 norm only on rope layers (transformers' Llama-4 skips it on NoPE
  layers; megatron's spec puts it on all, so NoPE layers get IdentityOp). Chunked attention
  (8192) and attention-temperature tuning on NoPE layers exist in neither megatron-core
  spec; both are inactive below 8192 tokens, so validation caps data.seq_len there.
- gpt_oss: learned attention sinks (`softmax_type="learnable"`), a sliding window on even
  layers (`window_size`, `window_attn_skip_freq=2`), biases on every linear and the router,
  clamped SwiGLU `(up + 1) * gate * sigmoid(1.702 gate)` (`quick_gelu`, `glu_linear_offset`,
  `activation_func_clamp_value`), yarn rope (`position_embedding_type="yarn"`). All of it runs
  on megatron-core's local spec; the window mask needs one CPU adaptation (megatron_cpu).
"""

from __future__ import annotations

from typing import Any, Dict, List

GPT_OSS_SWIGLU_LIMIT = 7.0  # transformers' GptOssExperts.limit (both checkpoints)
LLAMA4_MAX_SEQ_LEN = 8191  # below Llama-4's attention chunk (8192) and attention floor_scale (8192)


def moe_layer_flags(model_cfg) -> List[int]:
    """1 for an MoE layer: i >= first_k_dense_layers and (i + 1) % layer_freq == 0 (the
    Hugging Face rule, optmodel.facts.hf_config; Maverick's MoE layers are 1, 3, 5, ...)."""
    moe = model_cfg.moe
    return [int(i >= moe.first_k_dense_layers and (i + 1) % moe.layer_freq == 0) for i in range(model_cfg.num_layers)]


def nope_layer_flags(model_cfg) -> List[int]:
    """1 for a layer without rope (megatron's no_rope_freq as a list)."""
    n = model_cfg.nope_layer_interval
    return [int(bool(n) and (i + 1) % n == 0) for i in range(model_cfg.num_layers)]


def family_config_kwargs(model_cfg) -> Dict[str, Any]:
    """TransformerConfig arguments of the llama4 / gpt_oss families (empty for the others)."""
    if model_cfg.family == "llama4":
        kwargs: Dict[str, Any] = {"rotary_interleaved": True}
        if model_cfg.nope_layer_interval:
            kwargs["no_rope_freq"] = nope_layer_flags(model_cfg)
        if model_cfg.moe is not None:
            kwargs["moe_apply_probs_on_input"] = True
        return kwargs
    if model_cfg.family == "gpt_oss":
        from megatron.core.activations import quick_gelu

        kwargs = {
            "add_bias_linear": True,  # q/k/v/o, router and expert biases
            "add_qkv_bias": True,
            "softmax_type": "learnable",  # the attention sinks
            "activation_func": quick_gelu,  # gate * sigmoid(1.702 * gate)
            "glu_linear_offset": 1.0,  # (up + 1)
            "activation_func_clamp_value": GPT_OSS_SWIGLU_LIMIT,
        }
        if model_cfg.sliding_window:
            # transformers: key j is visible from query i when i - j < sliding_window;
            # megatron's window (left, right) admits i - j <= left.
            kwargs["window_size"] = (int(model_cfg.sliding_window) - 1, 0)
            kwargs["window_attn_skip_freq"] = 2  # windowed on 1-based odd = 0-based even layers
        return kwargs
    return {}


def set_yarn_attributes(config, model_cfg) -> None:
    """The yarn_* attributes GPTModel(position_embedding_type="yarn") reads from its config."""
    rope = dict(model_cfg.rope_scaling or {})
    config.yarn_rotary_scaling_factor = float(rope.get("factor", 1.0))
    config.yarn_original_max_position_embeddings = int(rope.get("original_max_position_embeddings", 4096))
    config.yarn_beta_fast = float(rope.get("beta_fast", 32.0))
    config.yarn_beta_slow = float(rope.get("beta_slow", 1.0))
    # Attention applies mscale(factor, 1) / mscale(factor, 0) = 0.1 ln(factor) + 1 to cos and
    # sin (attention.py, _yarn_get_concentration_factor_from_config): transformers' yarn
    # attention factor when config.json sets neither mscale nor mscale_all_dim.
    config.yarn_mscale = float(rope.get("mscale") or 1.0)
    config.yarn_mscale_all_dim = float(rope.get("mscale_all_dim") or 0.0)
    config.yarn_correction_range_round_to_int = bool(rope.get("truncate", True))


def adjust_layer_spec(spec, config, model_cfg) -> None:
    """Per-layer edits of this stage's decoder block spec: Llama-4's NoPE layers have no qk norm."""
    if model_cfg.family != "llama4" or not model_cfg.qk_l2_norm or not model_cfg.nope_layer_interval:
        return
    import copy

    from megatron.core.transformer.identity_op import IdentityOp
    from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

    flags = nope_layer_flags(model_cfg)
    offset = get_transformer_layer_offset(config)  # the spec holds this stage's layers only
    for index, layer in enumerate(spec.layer_specs):
        if flags[offset + index]:
            layer = copy.deepcopy(layer)  # layers of one kind share a spec object
            attn = layer.submodules.self_attention.submodules
            attn.q_layernorm = IdentityOp
            attn.k_layernorm = IdentityOp
            spec.layer_specs[index] = layer


def llama4_text_import_rules() -> Dict[str, Any]:
    """ModelOpt's Llama4ForConditionalGeneration import rules for the text-only checkpoint
    (Llama4ForCausalLM: no `language_model.` prefix), plus the dense-MLP rules of its
    Llama rules for the dense layers of Maverick-style models (the Llama-4 rules cover MoE
    layers only)."""
    import copy

    from modelopt.torch.export.plugins.mcore_common import all_mcore_hf_import_mapping
    from modelopt.torch.export.plugins.mcore_custom import CustomModuleMapping

    rules = {}
    for key, mapping in all_mcore_hf_import_mapping["Llama4ForConditionalGeneration"].items():
        if isinstance(mapping, CustomModuleMapping):
            mapping = copy.copy(mapping)
            mapping.target_name_or_prefix = mapping.target_name_or_prefix.replace("language_model.", "", 1)
        rules[key] = mapping
    dense = all_mcore_hf_import_mapping["LlamaForCausalLM"]
    for key in ("linear_fc1", "linear_fc2", "fused_pre_mlp_layernorm"):
        rules[key] = copy.copy(dense[key])
    rules["linear_fc1"].target_name_or_prefix = "model.layers.{}.feed_forward."
    rules["linear_fc2"].target_name_or_prefix = "model.layers.{}.feed_forward.down_proj."
    return rules


def register_import_rules() -> None:
    """Make ModelOpt's importer know the text-only Llama-4 checkpoint (idempotent)."""
    from modelopt.torch.export.plugins.mcore_common import all_mcore_hf_import_mapping

    if "Llama4ForCausalLM" not in all_mcore_hf_import_mapping:
        all_mcore_hf_import_mapping["Llama4ForCausalLM"] = llama4_text_import_rules()


def import_gpt_oss_bf16(model, hf_dir: str, dtype, moe_router_dtype=None) -> None:
    """ModelOpt's importer for GptOssForCausalLM, also reading bf16 experts.

    ModelOpt 0.46's gpt-oss rule reads the released MXFP4 layout only
    (`experts.gate_up_proj_blocks` / `_scales`); checkpoints saved by transformers (bf16
    fine-tunes, the tiny model) hold `experts.gate_up_proj` as [experts, in, out] with
    interleaved gate / up columns. This subclass takes that path when `_blocks` is absent
    and otherwise defers to ModelOpt, so every other tensor goes through its own rules.
    """
    import torch
    from modelopt.torch.export.plugins.megatron_importer import GPTModelImporter
    from modelopt.torch.export.plugins.mcore_custom import _get_safetensor_slices

    class Importer(GPTModelImporter):
        def _unpack_name_remapping_gpt_oss(self, module, prefix, layer_type, parallel_config=None, is_mtp=False):
            if _get_safetensor_slices(self.pretrained_model_path, prefix + "_blocks", parallel_config) is not None:
                return super()._unpack_name_remapping_gpt_oss(module, prefix, layer_type, parallel_config, is_mtp)
            weights = self._get_safetensor(prefix, parallel_config=parallel_config)  # this rank's experts
            biases = self._get_safetensor(prefix + "_bias", parallel_config=parallel_config)
            for idx, expert in enumerate(module.children()):
                linear = getattr(expert, layer_type)
                weight, bias = weights[idx].transpose(0, 1), biases[idx]  # -> [out, in]
                if layer_type == "linear_fc1":  # interleaved (gate, up) pairs -> [gate; up]
                    weight = torch.cat([weight[0::2], weight[1::2]])
                    bias = torch.cat([bias[0::2], bias[1::2]])
                current = linear.state_dict()
                state = {k: v for k, v in current.items() if "extra_state" in k}
                device = current["weight"].device
                state["weight"] = weight.to(dtype=self.dtype, device=device)
                state["bias"] = bias.to(dtype=self.dtype, device=device)
                linear.load_state_dict(state)

    Importer(model, hf_dir, dtype=dtype, moe_router_dtype=moe_router_dtype)._import_state_dict()
