"""MoE calibration coverage: which experts the calibration tokens reached.

Top-k routing sends each token to a few experts; with little calibration data some experts
see none. ModelOpt calibrates their weight quantizers from the weights alone and shares input
amax across a layer's experts, so they still export; the run reports them (a user may want
more or more varied data) and refuses to export when any enabled quantizer is left without
an amax, instead of writing scales that are garbage.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List


def expert_modules(model):
    """(name, module) of fused expert containers: HF's `*Experts` modules, called as
    experts(hidden_states, top_k_index, top_k_weights)."""
    for name, module in model.named_modules():
        if type(module).__name__.endswith("Experts") and isinstance(getattr(module, "num_experts", None), int):
            yield name, module


@contextmanager
def count_expert_tokens(model) -> Iterator[Dict[str, "torch.Tensor"]]:  # noqa: F821
    """Within the block, counts[name][e] = tokens routed to expert e of each expert module."""
    import torch

    counts: Dict[str, torch.Tensor] = {}
    handles = []
    for name, module in expert_modules(model):
        counts[name] = torch.zeros(module.num_experts, dtype=torch.long)

        def hook(mod, args, kwargs, name=name):
            # top_k_index (Qwen3-MoE, DeepSeek) or router_indices (gpt-oss), by name or position
            index = kwargs.get("top_k_index", kwargs.get("router_indices", args[1] if len(args) > 1 else None))
            if isinstance(index, torch.Tensor):
                counts[name] += torch.bincount(index.reshape(-1).cpu(), minlength=len(counts[name]))[: len(counts[name])]

        router = _router_with_dense_scores(model, name)
        if router is not None:
            handles.append(router.register_forward_hook(_count_from_scores(counts, name)))
        else:
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def _router_with_dense_scores(model, experts_name: str):
    """Llama-4's experts get the routed input only (no expert index): count at the sibling
    router instead, whose first output is [tokens, experts] scores, 0 where not routed."""
    parent_name = experts_name.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    router = getattr(parent, "router", None)
    if type(router).__name__ == "Llama4Router":
        return router
    return None


def _count_from_scores(counts, name):
    def hook(mod, args, output):
        scores = output[0] if isinstance(output, tuple) else output
        counts[name] += scores.detach().reshape(-1, scores.shape[-1]).gt(0).sum(0).cpu()[: len(counts[name])]

    return hook


def unrouted_experts(counts: Dict[str, "torch.Tensor"]) -> Dict[str, List[int]]:  # noqa: F821
    return {name: c.eq(0).nonzero().flatten().tolist() for name, c in counts.items() if bool(c.eq(0).any())}


def uncalibrated_quantizers(model) -> List[str]:
    """Enabled static quantizers that ended calibration without an amax."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    missing = []
    for name, module in model.named_modules():
        if not isinstance(module, TensorQuantizer) or not module.is_enabled or module.is_mx_format:
            continue
        if getattr(module, "_dynamic", False) or getattr(module, "_use_constant_amax", False):
            continue
        if module.block_sizes and module.block_sizes.get("type") == "dynamic" and module.num_bits != (2, 1):
            continue
        if module.amax is None:
            missing.append(name)
    return missing
