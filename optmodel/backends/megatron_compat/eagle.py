"""ModelOpt EAGLE (Megatron) on megatron-core's local spec: see the package docstring."""

from __future__ import annotations

import contextlib
from typing import Iterator

from optmodel.facts.library_sets import megatron_core_at_least
from optmodel.facts.machine import transformer_engine_installed

# =====================================================================================
# ModelOpt EAGLE (modelopt/torch/speculative/plugins/megatron_eagle.py)
# =====================================================================================
# ModelOpt 0.46.1's Megatron EAGLE builds its draft from Transformer-Engine pieces even when
# the target runs on megatron-core's local spec:
#   1. `EagleModule` normalizes with `TENorm` (the embeddings' `enorm`, and `hnorm`);
#   2. its EAGLE3 `fc` is a `TELinear(parallel_mode="duplicated")`;
#   3. its draft layer spec is megatron-core 0.16.1's `get_gpt_modelopt_spec`, whose `Norm`
#      raises ImportError without TE and whose core attention defaults to TEDotProductAttention;
#   4. every train-time-test forward enters `te_dot_product_attention_with_cp`, which reads
#      `TEDotProductAttention.forward`; without TE that class is built on megatron-core's
#      MagicMock stand-in for the `transformer_engine` module and has no `forward`;
#   5. its train-time-test steps write each step's keys / values into a StaticInferenceContext
#      cache in place; megatron-core 0.16.1's local DotProductAttention keeps views of that cache
#      for backward when no GQA repeat copies them (draft heads = query groups, e.g. an MLA
#      target), so backward fails ("modified by an inplace operation");
#   6. megatron-core 0.16.1's `Attention._adjust_key_value_for_inference` asks
#      `is_te_min_version("2.2.0")` when ModelOpt hands it an inference context (every
#      train-time-test step > 0), and that raises TypeError without TE (no TE version);
#      megatron-core 0.17.0 on answers False itself (TE version 0.0.0), so 6 applies below 0.17.
# The local equivalents: megatron-core's `WrappedTorchNorm`, its local `Linear` (one
# replicated weight on every TP rank, as "duplicated" means; given the TP group, since without
# one megatron-core 0.16.1's checkpoint entry claims TP rank 0 on every rank and a TP 2
# checkpoint save fails its sharding validation), the local layer spec with
# megatron-core's own DotProductAttention (which applies whatever mask it is given, so the
# arbitrary train-time-test mask works) reading copies of the cached keys / values (as ModelOpt's
# own CP wrapper copies them for TE), the context-parallel wrapper as a no-op (at CP 1 it
# patches nothing anyway; CP > 1 without TE is refused at validation), and
# `is_te_min_version` answering False (no TE).

EAGLE_MODULE = "modelopt.torch.speculative.plugins.megatron_eagle"


def _duplicated_linear():
    """megatron-core's local Linear taking TELinear's `parallel_mode` argument."""
    from megatron.core.post_training.modelopt.layers import Linear

    class DuplicatedLinear(Linear):
        """The same full weight on every tensor-parallel rank (TELinear's "duplicated")."""

        def __init__(self, input_size: int, output_size: int, *, parallel_mode=None, **kwargs):
            if parallel_mode not in (None, "duplicated"):
                raise ValueError(f"local Linear stands in for TELinear(parallel_mode='duplicated') only, "
                                 f"got {parallel_mode!r}")
            if kwargs.get("tp_group") is None:
                # replicated over TP in checkpoints: each TP rank holds a replica, not shard 0
                from megatron.core import parallel_state

                kwargs["tp_group"] = parallel_state.get_tensor_model_parallel_group()
            super().__init__(input_size, output_size, **kwargs)

    return DuplicatedLinear


def _copying_core_attention():
    """megatron-core's local DotProductAttention on copies of key and value."""
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    class CopyingDotProductAttention(DotProductAttention):
        """Keys / values may be views of a cache the next train-time-test step overwrites."""

        def forward(self, query, key, value, *args, **kwargs):
            return super().forward(query, key.clone(), value.clone(), *args, **kwargs)

    return CopyingDotProductAttention


def local_eagle_layer_spec(config, local_core_attention: bool = False, remap_te_layernorm: bool = False,
                           real_quant_cfg: str = "None", qk_l2_norm: bool = False,
                           use_arbitrary_attention_mask: bool = False):
    """`get_gpt_modelopt_spec`'s signature over megatron-core's local layer spec (torch norms,
    local core attention), with the attention mask type ModelOpt asks for."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.enums import AttnMaskType

    spec = get_gpt_layer_local_spec(normalization=config.normalization, qk_layernorm=config.qk_layernorm,
                                    qk_l2_norm=qk_l2_norm)
    spec.submodules.self_attention.params["attn_mask_type"] = (
        AttnMaskType.arbitrary if use_arbitrary_attention_mask else AttnMaskType.causal)
    spec.submodules.self_attention.submodules.core_attention = _copying_core_attention()
    return spec


@contextlib.contextmanager
def no_context_parallel_attention(attention_mask, num_attention_heads: int) -> Iterator[None]:
    """`te_dot_product_attention_with_cp` at context-parallel size 1: nothing to patch."""
    yield


def _te_absent(*args, **kwargs) -> bool:
    return False


@contextlib.contextmanager
def eagle_on_local_spec() -> Iterator[None]:
    """Scope in which ModelOpt's Megatron EAGLE builds and runs its draft on the local spec.
    Wrap `mtsp.convert` and every forward of the converted model in it. No-op with TE."""
    if transformer_engine_installed():
        yield
        return
    import importlib

    import megatron.core.transformer.attention as attention
    from megatron.core.transformer.torch_norm import WrappedTorchNorm


    eagle = importlib.import_module(EAGLE_MODULE)
    replaced = [(eagle, "TENorm", WrappedTorchNorm), (eagle, "TELinear", _duplicated_linear()),
                (eagle, "get_gpt_modelopt_spec", local_eagle_layer_spec),
                (eagle, "te_dot_product_attention_with_cp", no_context_parallel_attention)]
    if not megatron_core_at_least(0, 17):
        replaced.append((attention, "is_te_min_version", _te_absent))
    saved = [(module, name, getattr(module, name)) for module, name, _ in replaced]
    for module, name, value in replaced:
        setattr(module, name, value)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
