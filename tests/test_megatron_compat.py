"""optmodel/backends/megatron_compat/: each adaptation of ModelOpt's Megatron plugins to
megatron-core's local spec has a test here that fails once the library does it itself (then
the adaptation goes), and nothing of it may let the process believe Transformer-Engine is
installed. The adapted plugins running for real: tests/test_prune_megatron.py."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys

import pytest

from optmodel.facts.machine import transformer_engine_installed

pytestmark = pytest.mark.skipif(transformer_engine_installed(), reason="the adaptations apply without Transformer-Engine")


@pytest.fixture(scope="module")
def minitron():
    from optmodel.backends.megatron_compat import minitron

    return minitron()


# --- ModelOpt Minitron ---------------------------------------------------------------------

def test_transformer_engine_stays_absent_after_the_plugin_import(minitron):
    import megatron.core.extensions.transformer_engine as extensions

    from optmodel.facts.machine import transformer_engine_usable

    assert "transformer_engine" not in sys.modules and "transformer_engine.pytorch" not in sys.modules
    assert importlib.util.find_spec("transformer_engine") is None and not transformer_engine_usable()
    assert extensions.HAVE_TE is False
    # megatron's TE names are its own placeholders again, not the stand-ins lent to the import
    assert all("StandIn" not in repr(getattr(extensions, name)) for name in ("TELinear", "TEDotProductAttention"))
    assert extensions.TEColumnParallelGroupedLinear is None
    # the mode is registered: mtp.prune(mode="mcore_minitron") resolves
    from modelopt.torch.prune.pruning import PruneModeRegistry

    assert "mcore_minitron" in PruneModeRegistry


def test_modelopt_minitron_plugin_still_imports_transformer_engine(minitron):
    """Adaptation 1 (the scoped TE stand-in): ModelOpt 0.46.1's plugin fails to import
    without TE. Executed afresh (not registered anywhere) it must still stop at that import."""
    spec = importlib.util.find_spec("modelopt.torch.nas.plugins.megatron")
    fresh = importlib.util.module_from_spec(spec)
    with pytest.raises(ModuleNotFoundError, match="transformer_engine"):
        spec.loader.exec_module(fresh)


def test_modelopt_registers_no_local_spec_norm_or_linear(minitron):
    """Adaptation 2: the dynamic modules of torch.nn.RMSNorm and megatron's local Linear are
    ours (were ModelOpt to register them, `minitron()` would fail on the double registration)."""
    import torch.nn as nn
    from megatron.core.post_training.modelopt.layers import Linear
    from megatron.core.transformer.attention import SelfAttention
    from megatron.core.transformer.multi_latent_attention import MLASelfAttention
    from modelopt.torch.nas.registry import DMRegistry

    for cls in (nn.RMSNorm, Linear, SelfAttention, MLASelfAttention):
        assert any(c.__module__ == "optmodel.backends.megatron_compat.minitron" for c in DMRegistry[cls].__mro__), cls


def test_modelopt_head_pruning_still_needs_te_attention(minitron):
    """Adaptation 2: ModelOpt's SelfAttention prunes heads only with TE's core attention and
    fused QKV; its MLA reads TE's in_features / out_features."""
    from modelopt.torch.nas.plugins import megatron as plugin

    assert "isinstance(self.core_attention, TEDotProductAttention)" in inspect.getsource(plugin._DynamicSelfAttention._setup)
    source = inspect.getsource(plugin._DynamicAttention._setup)
    assert "col.out_features" in source and "row.in_features" in source


def test_modelopt_hidden_importance_still_reads_te_fused_norms(minitron):
    """Adaptation 3: the hidden-size statistic comes from TE's fused layernorm-linears only
    (dense MLPs: linear_fc1's `return_layernorm_output`)."""
    source = inspect.getsource(minitron._register_hidden_size_importance.__wrapped__)
    assert "layer.mlp.linear_fc1" in source and "return_layernorm_output = True" in source


def test_modelopt_collectives_still_assume_cuda(minitron):
    """Adaptation 4 (minitron_collectives): CUDA tensors in ModelOpt's broadcast and
    all_gather_into_tensor of the layer counts."""
    from modelopt.torch.utils import distributed

    assert ".cuda()" in inspect.getsource(distributed.broadcast)
    source = inspect.getsource(minitron.drop_mcore_language_model_layers)
    assert ".cuda()" in source and "all_gather_into_tensor" in source


def test_collectives_adaptation_is_undone_after_the_block(minitron):
    import torch
    import torch.distributed as dist

    from optmodel.backends.megatron_compat import minitron_collectives

    cuda, gather = torch.Tensor.cuda, dist.all_gather_into_tensor
    with minitron_collectives():
        pass
    assert torch.Tensor.cuda is cuda and dist.all_gather_into_tensor is gather
