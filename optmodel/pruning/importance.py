"""Activation importance of every prunable dimension of a Hugging Face decoder, from one
pass over the calibration batches, through ModelOpt's importance hooks
(`modelopt.torch.prune.importance_hooks`) registered as plain forward hooks:

| dimension | hook (where) | as in mcore_minitron |
| --- | --- | --- |
| MLP / shared-expert width | `L2NormHook` on `down_proj`'s input | L2 of `linear_fc2` input |
| attention heads | `L2NormHook` on `o_proj`'s input, L2 over each head's channels | same (`linear_proj` input) |
| query groups | `IndependentKvHeadContributionHook` on `o_proj` | (Minitron no longer prunes groups) |
| hidden channels | `LayerNormContributionHook` on both pre-norms of every layer | post-layernorm activations |
| experts | `RankedChoiceVotingHook` on the router | per-expert output L2 |
| MoE FFN width | `L2NormHook` per expert on its `down_proj` input | per-expert `linear_fc2` input |
| layers | cosine distance a block makes (see depth.py) | same |

transformers fuses a layer's experts into 3-D parameters, so no module sees one expert's
`down_proj` input; a hook on the fused `experts` recomputes act(gate) * up for each
expert's routed tokens and hands it to that expert's `L2NormHook` (each expert is scored as
a separate linear, as on megatron).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Dict, Iterable

import torch
from modelopt.torch.prune.importance_hooks import (
    IndependentKvHeadContributionHook,
    L2NormHook,
    LayerNormContributionHook,
    RankedChoiceVotingHook,
)
from tqdm import tqdm

from optmodel.pruning import layout
from optmodel.pruning.depth import BlockDistanceHook


class BatchFirstL2NormHook(L2NormHook):
    """ModelOpt's L2NormHook reads Megatron's [seq, batch, channels]; transformers is
    batch-first, so the input is transposed back (its documented override point)."""

    def _get_input_tensor(self, args):
        x = args[0].detach()
        return x.transpose(0, 1) if x.dim() == 3 else x


class ExpertFfnHook:
    """Forward hook on a fused `experts` module: each routed expert's down_proj input
    (act(gate) * up over its tokens) into that expert's own L2NormHook."""

    def __init__(self, num_experts: int):
        self.per_expert = [L2NormHook() for _ in range(num_experts)]

    def __call__(self, module, args, output):
        hidden, top_k_index = args[0], args[1]
        with torch.no_grad():
            for e in torch.unique(top_k_index).tolist():
                tokens = (top_k_index == e).any(dim=-1)
                gate, up = torch.nn.functional.linear(hidden[tokens], module.gate_up_proj[e]).chunk(2, dim=-1)
                self.per_expert[e](module, ((module.act_fn(gate) * up).detach(),), None)

    def scores(self) -> torch.Tensor:
        width = next(h for h in self.per_expert if h._activations is not None)._activations.numel()
        # an expert no calibration token reached has no signal: zeros keep its first channels
        rows = [h.accumulate() if h._activations is not None else torch.zeros(width) for h in self.per_expert]
        return torch.stack([r.float().cpu() for r in rows])


def _head_scores(hook: L2NormHook, num_heads: int) -> torch.Tensor:
    per_channel = hook.accumulate().float().cpu()
    return torch.linalg.vector_norm(per_channel.view(num_heads, -1), ord=2, dim=1)


class ImportanceHooks:
    """Every hook of one model, registered on construction; `scores()` collects them and
    `remove()` detaches them."""

    def __init__(self, model):
        self.model = model
        self.handles = []
        self.layer_hooks: Dict[int, Dict[str, object]] = {}
        conf = model.config
        for i, layer in enumerate(layout.layers(model)):
            hooks: Dict[str, object] = {"depth": BlockDistanceHook()}
            self.handles.append(layer.register_forward_hook(hooks["depth"], with_kwargs=True))
            hooks["hidden"] = [LayerNormContributionHook(norm, {}) for norm in (layer.input_layernorm, layer.post_attention_layernorm)]
            self._add(layer.input_layernorm, hooks["hidden"][0])
            self._add(layer.post_attention_layernorm, hooks["hidden"][1])
            attn = layer.self_attn
            if not layout.is_mla(attn):
                hooks["heads"] = self._add(attn.o_proj, BatchFirstL2NormHook())
                kv = conf.num_key_value_heads
                hooks["groups"] = self._add(attn.o_proj, IndependentKvHeadContributionHook(
                    attn.o_proj, {"model": model, "block_config": SimpleNamespace(attention=SimpleNamespace(num_key_value_heads=kv))}))
            moe = layout.moe_block(layer)
            if moe is None:
                hooks["ffn"] = self._add(layer.mlp.down_proj, BatchFirstL2NormHook())
            else:
                top_k = conf.num_experts_per_tok
                hooks["experts"] = self._add(moe.gate, RankedChoiceVotingHook(moe.gate, {
                    "block_config": SimpleNamespace(ffn=SimpleNamespace(moe=SimpleNamespace(num_experts_per_tok=top_k)))}))
                hooks["expert_ffn"] = self._add(moe.experts, ExpertFfnHook(moe.experts.num_experts))
                shared = getattr(moe, "shared_experts", None)
                if shared is not None:
                    hooks["shared_ffn"] = self._add(shared.down_proj, BatchFirstL2NormHook())
            self.layer_hooks[i] = hooks

    def _add(self, module, hook):
        self.handles.append(module.register_forward_hook(hook))
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def scores(self) -> Dict[str, torch.Tensor]:
        """{"layers": [L], "hidden": [H], "<i>.ffn", "<i>.heads", "<i>.groups", "<i>.experts",
        "<i>.expert_ffn" ([E, moe ffn]), "<i>.shared_ffn"}: higher is more important."""
        out: Dict[str, torch.Tensor] = {}
        depth, hidden = [], None
        heads = self.model.config.num_attention_heads
        for i, hooks in self.layer_hooks.items():
            depth.append(hooks["depth"].score())
            for h in hooks["hidden"]:
                s = h.accumulate().float().cpu()
                hidden = s if hidden is None else hidden + s
            if "heads" in hooks:
                out[f"{i}.heads"] = _head_scores(hooks["heads"], heads)
                out[f"{i}.groups"] = hooks["groups"].accumulate().float().cpu()
            if "ffn" in hooks:
                out[f"{i}.ffn"] = hooks["ffn"].accumulate().float().cpu()
            if "experts" in hooks:
                # rank at which ranked-choice voting eliminates the expert: later = more important
                out[f"{i}.experts"] = hooks["experts"].to_dict()["expert_ranks"].float()
                out[f"{i}.expert_ffn"] = hooks["expert_ffn"].scores()
            if "shared_ffn" in hooks:
                out[f"{i}.shared_ffn"] = hooks["shared_ffn"].accumulate().float().cpu()
        out["layers"] = torch.tensor(depth)
        out["hidden"] = hidden
        return out


def score(model, batches: Iterable[dict], device, desc: str = "importance") -> Dict[str, object]:
    """Importance scores of `model` over `batches` (one forward each, no gradients), with
    the time it took: {"scores": {...}, "batches": n, "seconds": s}."""
    batches = list(batches)
    hooks = ImportanceHooks(model)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc=desc, unit="batch"):
                model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False)
        scores = hooks.scores()
    finally:
        hooks.remove()
    return {"scores": scores, "batches": len(batches), "seconds": round(time.perf_counter() - start, 3)}
