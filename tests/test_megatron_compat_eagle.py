"""optmodel.backends.megatron_compat, "ModelOpt EAGLE": one test per adaptation that fails once
ModelOpt (0.46.1) / megatron-core (0.16.1) run EAGLE on the local spec without Transformer-Engine
themselves, so the adaptation can go; and the scope leaves nothing behind."""

from __future__ import annotations

import importlib
import sys

import pytest

from optmodel.facts.machine import transformer_engine_installed

pytestmark = pytest.mark.skipif(transformer_engine_installed(), reason="the TE spec runs unchanged with TE")


def eagle_plugin():
    return importlib.import_module("modelopt.torch.speculative.plugins.megatron_eagle")


def test_modelopt_still_builds_the_draft_norm_and_fc_from_transformer_engine():
    from megatron.core.extensions import transformer_engine as te_ext

    plugin = eagle_plugin()
    assert plugin.TENorm is te_ext.TENorm and plugin.TELinear is te_ext.TELinear
    assert not te_ext.HAVE_TE  # megatron-core's stand-ins: building one gives no working layer


def test_megatron_core_modelopt_spec_still_needs_transformer_engine():
    from megatron.core.post_training.modelopt.layers import Norm
    from megatron.core.transformer.transformer_config import TransformerConfig

    config = TransformerConfig(num_layers=1, hidden_size=8, num_attention_heads=2, normalization="RMSNorm")
    with pytest.raises(ImportError, match="Transformer-Engine"):
        Norm(config, 8)


def test_the_context_parallel_wrapper_still_reads_te_attention():
    from megatron.core.extensions.transformer_engine import TEDotProductAttention

    with pytest.raises(AttributeError):
        TEDotProductAttention.forward  # noqa: B018  what te_dot_product_attention_with_cp reads first


def test_is_te_min_version_fails_without_transformer_engine_below_megatron_core_0_17():
    """Adaptation 6 is applied below megatron-core 0.17 only: from 0.17.0 the library answers
    False itself (no TE version), so the stand-in is left out there."""
    from megatron.core.transformer import attention

    from optmodel.facts.library_sets import megatron_core_at_least

    if megatron_core_at_least(0, 17):
        assert attention.is_te_min_version("2.2.0") is False
    else:
        with pytest.raises(TypeError):
            attention.is_te_min_version("2.2.0")


def test_the_scope_is_undone_and_never_claims_transformer_engine():
    from megatron.core.transformer import attention

    from optmodel.backends.megatron_compat import eagle_on_local_spec

    plugin = eagle_plugin()
    names = ("TENorm", "TELinear", "get_gpt_modelopt_spec", "te_dot_product_attention_with_cp")
    before = {n: getattr(plugin, n) for n in names} | {"is_te_min_version": attention.is_te_min_version}
    with eagle_on_local_spec():
        assert attention.is_te_min_version("0.1") is False
        assert plugin.get_gpt_modelopt_spec is not before["get_gpt_modelopt_spec"]
        assert "transformer_engine" not in sys.modules and not transformer_engine_installed()
    assert {n: getattr(plugin, n) for n in names} | {"is_te_min_version": attention.is_te_min_version} == before


def test_local_attention_still_keeps_views_of_the_cache_it_is_given():
    """ModelOpt writes each train-time-test step's keys into its cache in place; megatron-core's
    local attention saves what it was given for backward, so the next write breaks backward
    unless the draft's attention reads copies (CopyingDotProductAttention)."""
    import torch
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig

    from conftest import compose_cfg
    from optmodel.backends.megatron_compat.eagle import _copying_core_attention
    from optmodel.backends.megatron_world import destroy_model_parallel, init_model_parallel

    init_model_parallel(compose_cfg().parallel, device="cpu")
    try:
        config = TransformerConfig(num_layers=1, hidden_size=8, num_attention_heads=2, use_cpu_initialization=True)
        mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)

        def backward_after_the_next_write(cls):
            attn = cls(config, layer_number=1, attn_mask_type=AttnMaskType.arbitrary, attention_type="self")
            query = torch.randn(4, 1, 2, 4, requires_grad=True)
            cache = torch.zeros(4, 1, 2, 4)
            cache[:] = torch.randn(4, 1, 2, 4, requires_grad=True)  # this step's keys, written in place
            out = attn(query, cache, cache, attention_mask=mask)
            cache.add_(1.0)  # the next step's write
            out.sum().backward()

        with pytest.raises(RuntimeError, match="inplace"):
            backward_after_the_next_write(DotProductAttention)
        backward_after_the_next_write(_copying_core_attention())
    finally:
        destroy_model_parallel()
