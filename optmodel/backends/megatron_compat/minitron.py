"""ModelOpt Minitron (`mcore_minitron`) on megatron-core's local spec: see the package docstring."""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from functools import partial

from optmodel.facts.library_sets import megatron_core_at_least
from optmodel.facts.machine import transformer_engine_installed

# =========================================================================================
# ModelOpt Minitron (`mcore_minitron`: modelopt.torch.nas.plugins.megatron and
# modelopt.torch.prune.plugins.mcore_minitron), ModelOpt 0.46.1 on megatron-core 0.16.1.
#
# 1. The plugin starts with `import transformer_engine as te` and imports TE layer classes
#    from megatron.core.extensions.transformer_engine (MagicMock placeholders there without
#    TE, which DMRegistry refuses); modelopt.torch.nas.plugins wraps it in
#    `import_plugin("megatron")`, so without TE `mode="mcore_minitron"` is silently unknown.
#    `_te_stand_in` lends both imports stand-in classes for that one import and takes them
#    back: afterwards `transformer_engine` is neither importable nor in sys.modules.
# 2. Dynamic modules for the local spec's classes, which the plugin registers for the TE
#    ones only: torch.nn.RMSNorm (megatron's WrappedTorchNorm), the replicated local Linear
#    (MLA down-projections), fused QKV / output projections and core attention of
#    SelfAttention (head pruning), MLA's projections (the local layers name their sizes
#    input_size / output_size, TE's in_features / out_features).
# 3. Hidden-size importance: ModelOpt reads the layernorm output from TE's fused
#    layernorm-linear (`return_layernorm_output`); the local spec has separate norms, so
#    the same statistic is collected by forward hooks on them.
# 4. gloo (`minitron_collectives`): collectives on `.cuda()` tensors (the hidden_size hparam
#    broadcast, the per-stage layer counts of depth pruning) and an all_gather_into_tensor,
#    which gloo lacks.
# =========================================================================================

MINITRON_PLUGIN = "modelopt.torch.nas.plugins.megatron"
MINITRON_MODE = "modelopt.torch.prune.plugins.mcore_minitron"
# megatron.core.extensions.transformer_engine names the plugin imports (ModelOpt 0.46.1)
_TE_LAYER_NAMES = ("TEColumnParallelGroupedLinear", "TEColumnParallelLinear", "TEDotProductAttention",
                   "TELayerNormColumnParallelLinear", "TELinear", "TERowParallelGroupedLinear",
                   "TERowParallelLinear")
# imported before the stand-in exists, so none of them sees it (each probes for TE itself)
_IMPORT_FIRST = ("megatron.core.extensions.transformer_engine", "megatron.core.models.gpt",
                 "megatron.core.models.gpt.moe_module_specs", "megatron.core.ssm.gated_delta_net",
                 "megatron.core.transformer.moe.experts", "megatron.core.transformer.multi_latent_attention",
                 "megatron.core.post_training.modelopt.layers", "modelopt.torch.nas",
                 "modelopt.torch.opt.searcher", "modelopt.torch.prune")
# megatron-core >= 0.17 (the plugin of ModelOpt 0.47): the hybrid layer specs build a TE MoE spec
# at import, asking TE's installed version, which the stand-in has none of
_IMPORT_FIRST_MCORE_0_17 = ("megatron.core.models.hybrid.hybrid_layer_specs", "megatron.core.models.hybrid.hybrid_model")


def _import_first() -> tuple[str, ...]:

    return _IMPORT_FIRST + (_IMPORT_FIRST_MCORE_0_17 if megatron_core_at_least(0, 17) else ())


# what may be imported under the stand-in: the plugin modules themselves
_PLUGIN_MODULES = (MINITRON_PLUGIN, "modelopt.torch.nas.plugins.megatron_model_stats", MINITRON_MODE)
_adapted = False


def minitron():
    """ModelOpt's mcore_minitron module, its mode registered, ready for the model handle's
    spec: as shipped where Transformer-Engine is installed, adapted to the local spec
    otherwise (idempotent)."""
    global _adapted

    if transformer_engine_installed():
        return importlib.import_module(MINITRON_MODE)
    if not _adapted:
        for name in _import_first():
            importlib.import_module(name)
        with _te_stand_in():
            importlib.import_module(MINITRON_PLUGIN)
            module = importlib.import_module(MINITRON_MODE)
        _register_local_modules()
        _collect_hidden_importance_on_norms(module)
        _adapted = True
    return importlib.import_module(MINITRON_MODE)


@contextlib.contextmanager
def _te_stand_in():
    """`import transformer_engine` and the TE layer classes of megatron's extensions module
    answer with inert stand-ins (classes no layer is an instance of) for the block only."""
    import torch.nn as nn

    extensions = importlib.import_module("megatron.core.extensions.transformer_engine")
    te = types.ModuleType("transformer_engine")
    te.pytorch = types.ModuleType("transformer_engine.pytorch")
    te.pytorch.LayerNorm = type("TEStandInLayerNorm", (nn.Module,), {})
    te.pytorch.RMSNorm = type("TEStandInRMSNorm", (nn.Module,), {})
    saved = {name: getattr(extensions, name) for name in _TE_LAYER_NAMES}
    for name in _TE_LAYER_NAMES:
        setattr(extensions, name, type(f"{name}StandIn", (nn.Module,), {}))
    before = set(sys.modules)
    sys.modules["transformer_engine"] = te
    sys.modules["transformer_engine.pytorch"] = te.pytorch
    try:
        yield
    finally:
        sys.modules.pop("transformer_engine", None)
        sys.modules.pop("transformer_engine.pytorch", None)
        for name, value in saved.items():
            setattr(extensions, name, value)
    # a module imported for the first time under the stand-in may have concluded TE exists
    saw_stand_in = sorted(m for m in set(sys.modules) - before if not m.startswith(_PLUGIN_MODULES))
    if saw_stand_in:
        raise RuntimeError(f"imported under the Transformer-Engine stand-in: {saw_stand_in}; import them first "
                           f"(optmodel.backends.megatron_compat.minitron._import_first)")


def _width(linear, side: str) -> int:
    """A linear's input / output size under either naming (local: input_size, TE / torch: in_features)."""
    local = getattr(linear, f"{side}_size", None)
    return local if local is not None else getattr(linear, {"input": "in_features", "output": "out_features"}[side])


def _register_local_modules() -> None:
    """Adaptation 2 (ModelOpt 0.46.1, megatron-core 0.16.1 local spec): dynamic modules for
    the local layers, built from ModelOpt's own TE ones (same slicing, the local size names);
    ModelOpt's SelfAttention / MLASelfAttention registrations are replaced by subclasses."""
    import torch.nn as nn
    from megatron.core.post_training.modelopt.layers import Linear
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.attention import SelfAttention
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.multi_latent_attention import MLASelfAttention
    from modelopt.torch.nas.modules.norm import _DynamicLayerNorm
    from modelopt.torch.nas.plugins import megatron as plugin
    from modelopt.torch.nas.registry import DMRegistry
    from modelopt.torch.opt.dynamic import DynamicModule
    from modelopt.torch.nas.traced_hp import TracedHp

    class _DynamicTorchRMSNorm(_DynamicLayerNorm):
        """torch.nn.RMSNorm over the shared hidden_size hparam (what TENorm gets on TE)."""

        def _setup(self, *, num_features):
            self._register_hparam("num_features", num_features)
            self._register_dynamic_attribute("weight", self._cut_to_active_features)
            self._register_dynamic_attribute("normalized_shape", self._get_normalized_shape)

    class _DynamicLocalLinear(plugin._DynamicTEParallelLinear):
        """megatron's replicated local Linear (an nn.Linear: in_features / out_features, as TELinear)."""

    te_qkv = plugin._DynamicTEQKVLayerNormColumnParallelLinear.__dict__
    te_proj = plugin._DynamicTEProjRowParallelLinear.__dict__

    class _DynamicLocalQKV(DynamicModule, ColumnParallelLinear):
        """Fused QKV ColumnParallelLinear: input over hidden_size, output over the kept heads
        of every query group (ModelOpt's TE slicing; the norm is a separate module here)."""

        _get_output_size_indices = te_qkv["_get_output_size_indices"]
        _get_weight = te_qkv["_get_weight"]
        _get_bias = te_qkv["_get_bias"]

        def _setup(self, *, num_attention_heads, hidden_size):
            self._register_hparam("input_size", hidden_size)
            self._register_hparam("num_attention_heads", num_attention_heads)
            size = lambda mod, val: (num_attention_heads.active + 2 * mod.config.num_query_groups) * mod.config.kv_channels  # noqa: E731
            self._register_dynamic_attribute("output_size", size)
            self._register_dynamic_attribute("output_size_per_partition", size)
            self._register_dynamic_attribute("weight", self._get_weight)
            if self.bias is not None:
                self._register_dynamic_attribute("bias", self._get_bias)

    class _DynamicLocalProj(DynamicModule, RowParallelLinear):
        """Attention output RowParallelLinear: input over the kept heads, output over hidden_size."""

        _get_input_size_indices = te_proj["_get_input_size_indices"]
        _get_weight = te_proj["_get_weight"]
        _get_bias = te_proj["_get_bias"]

        def _setup(self, *, num_attention_heads, hidden_size):
            self._register_hparam("output_size", hidden_size)
            self._register_hparam("num_attention_heads", num_attention_heads)
            size = lambda mod, val: num_attention_heads.active * mod.config.kv_channels  # noqa: E731
            self._register_dynamic_attribute("input_size", size)
            self._register_dynamic_attribute("input_size_per_partition", size)
            self._register_dynamic_attribute("weight", self._get_weight)
            if self.bias is not None:
                self._register_dynamic_attribute("bias", self._get_bias)

    def hidden_size_only(attn, hidden_size) -> None:
        """ModelOpt's _DynamicAttention._setup, reading the local layers' size names."""
        for name in attn._input_proj_names():
            col = getattr(attn, name)
            DMRegistry.convert(col, input_size=hidden_size, output_size=TracedHp([_width(col, "output")]))
        row = getattr(attn, attn._row_proj_name)
        DMRegistry.convert(row, input_size=TracedHp([_width(row, "input")]), output_size=hidden_size)

    class _DynamicLocalSelfAttention(plugin._DynamicSelfAttention):
        """SelfAttention of the local spec: separate input norm, local core attention."""

        _has_fused_input_layernorm = False

        def _setup(self, *, hidden_size):
            if not self._prunes_attention_heads():
                hidden_size_only(self, hidden_size)
                return
            heads = plugin.NumAttentionHeadsHp(self.num_attention_heads_per_partition,
                                               self.num_query_groups_per_partition)
            self._register_hparam("num_attention_heads", heads)
            self._register_dynamic_attribute("num_attention_heads_per_partition", lambda mod, val: mod.num_attention_heads)
            assert isinstance(self.core_attention, DotProductAttention), type(self.core_attention)
            core = type("_DynamicLocalCoreAttention", (DynamicModule, type(self.core_attention)), {"_setup": lambda self: None})
            core.convert(self.core_attention)
            self.core_attention._register_dynamic_attribute(
                "num_attention_heads_per_partition", lambda mod, val: heads.active)
            self.core_attention._register_dynamic_attribute(
                "hidden_size_per_partition", lambda mod, val: heads.active * mod.config.kv_channels)
            _DynamicLocalQKV.convert(self.linear_qkv, num_attention_heads=heads, hidden_size=hidden_size)
            _DynamicLocalProj.convert(self.linear_proj, num_attention_heads=heads, hidden_size=hidden_size)

    class _DynamicLocalMLASelfAttention(plugin._DynamicMLASelfAttention):
        """MLA of the local spec: hidden_size on its input and output projections, read by
        the local layers' names."""

        def _setup(self, *, hidden_size):
            hidden_size_only(self, hidden_size)

    DMRegistry.register({nn.RMSNorm: "nn.RMSNorm"})(_DynamicTorchRMSNorm)
    DMRegistry.register({Linear: "megatron.core.post_training.modelopt.layers.Linear"})(_DynamicLocalLinear)
    for cls, key, dynamic in ((SelfAttention, "megatron.core.transformer.attention.SelfAttention", _DynamicLocalSelfAttention),
                              (MLASelfAttention, "megatron.core.transformer.multi_latent_attention.MLASelfAttention",
                               _DynamicLocalMLASelfAttention)):
        DMRegistry.unregister(cls)
        DMRegistry.register({cls: key})(dynamic)


def _collect_hidden_importance_on_norms(minitron_module) -> None:
    """ModelOpt 0.46.1 `_register_hidden_size_importance` hooks TE's fused layernorm-linears;
    on the local spec (the only one a process without TE builds) the same post-norm
    activations come from the norms themselves."""
    original = minitron_module._register_hidden_size_importance

    def register(module, registry):
        return _register_on_norms(module, registry)

    register.__wrapped__ = original  # ModelOpt's, for tests/test_megatron_compat.py
    minitron_module._register_hidden_size_importance = register


def _register_on_norms(module, registry) -> None:
    """ModelOpt's statistic (per channel: L2 over the batch of the token-mean |norm output|,
    summed over the norms, all-reduced over stages) from forward hooks on every hidden-size
    norm of the local spec: each layer's input_layernorm and pre_mlp_layernorm."""
    import torch
    from megatron.core.transformer.identity_op import IdentityOp

    module._register_temp_attribute("_activations", {})

    def collect(mod, norm, args, output):
        act = output.detach().to(torch.float32).abs().mean(dim=0).pow(2).sum(dim=0)
        key = id(norm)
        mod._activations[key] = act if key not in mod._activations else mod._activations[key] + act

    def estimate(mod):
        assert mod._activations, "No activations collected for importance estimation."
        activations = torch.stack([a.pow(0.5) for a in mod._activations.values()]).sum(dim=0).clone()
        torch.distributed.all_reduce(activations, op=torch.distributed.ReduceOp.SUM)
        return activations

    for layer in module.decoder.layers:
        for norm in (layer.input_layernorm, layer.pre_mlp_layernorm):
            if not isinstance(norm, IdentityOp):
                registry.register_hook(norm, partial(collect, module), hook_type="forward")
    registry.register_importance(module, "hidden_size", lambda: estimate(module))


@contextlib.contextmanager
def minitron_collectives():
    """Around `mtp.prune(mode="mcore_minitron")` on a gloo world (CPU): ModelOpt 0.46.1 moves
    the tensors of its collectives to CUDA (`modelopt.torch.utils.distributed.broadcast` of
    the shared hidden_size hparam; drop_mcore_language_model_layers' per-stage layer counts)
    and gathers the layer counts with all_gather_into_tensor, which gloo lacks. In the block
    `Tensor.cuda` is the identity and all_gather_into_tensor goes through all_gather_object;
    on NCCL nothing changes."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_backend() != "gloo":
        yield
        return

    def all_gather_into_tensor(output, tensor, group=None, async_op=False):
        values = [None] * dist.get_world_size(group)
        dist.all_gather_object(values, tensor.cpu(), group=group)
        output.copy_(torch.stack([v.reshape(tensor.shape) for v in values]).reshape(output.shape))

    cuda, gather = torch.Tensor.cuda, dist.all_gather_into_tensor
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    dist.all_gather_into_tensor = all_gather_into_tensor
    try:
        yield
    finally:
        torch.Tensor.cuda, dist.all_gather_into_tensor = cuda, gather
