"""The EAGLE3 draft's shape, and `mtsp.convert` of a target (online) or of a target's
embeddings + LM head only (offline, ModelOpt's `eagle_offline` mode)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from optmodel.speculative.serving import default_aux_layer_ids


@dataclass
class DraftSpec:
    num_layers: int = 1  # draft decoder layers
    aux_layer_ids: List[int] = field(default_factory=list)  # output ids; empty: low / middle / high (serving.py)
    draft_vocab_size: Optional[int] = None  # None: the target's vocabulary
    ttt_steps: int = 3  # train-time-test steps
    intermediate_size: Optional[int] = None  # None: the target's MLP size

    @classmethod
    def from_cfg(cls, task) -> "DraftSpec":
        return cls(num_layers=int(task.draft_layers), aux_layer_ids=[int(i) for i in task.aux_layer_ids],
                   draft_vocab_size=task.draft_vocab_size, ttt_steps=int(task.ttt_steps),
                   intermediate_size=task.draft_intermediate_size)


def text_config(config):
    return getattr(config, "text_config", None) or getattr(config, "llm_config", None) or config


def rope_theta(config) -> float:
    for attr in ("rope_parameters", "rope_scaling"):
        rope = getattr(config, attr, None)
        if isinstance(rope, dict) and rope.get("rope_theta") is not None:
            return float(rope["rope_theta"])
    return float(getattr(config, "rope_theta", None) or 10000.0)


def aux_layer_ids(spec: DraftSpec, num_layers: int) -> List[int]:
    """The target layers whose outputs the draft fuses (output ids, ModelOpt's hook convention)."""
    return sorted(spec.aux_layer_ids) if spec.aux_layer_ids else default_aux_layer_ids(num_layers)


def eagle_config(base_config, spec: DraftSpec, dtype: str, offline: bool = False,
                 num_layers: Optional[int] = None) -> Dict[str, Any]:
    """ModelOpt's EAGLE3 config with the draft sized like one target layer.

    ModelOpt's default draft is Llama-3-8B shaped (32 heads, MLP 14336); the draft layer
    here takes the target's heads, head dim and MLP size instead, so any target fits."""
    from modelopt.torch.speculative.config import EAGLE3_DEFAULT_CFG

    text = text_config(base_config)
    layers = num_layers if num_layers is not None else text.num_hidden_layers
    cfg = copy.deepcopy(EAGLE3_DEFAULT_CFG["config"])
    theta = rope_theta(text)
    heads = text.num_attention_heads
    cfg["eagle_architecture_config"].update(
        num_hidden_layers=spec.num_layers,
        intermediate_size=spec.intermediate_size or text.intermediate_size,
        num_attention_heads=heads,
        num_key_value_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        rms_norm_eps=getattr(text, "rms_norm_eps", 1e-6),
        rope_theta=theta,
        rope_scaling={"rope_type": "default", "rope_theta": theta},
        draft_vocab_size=spec.draft_vocab_size or text.vocab_size,
        eagle_aux_hidden_state_layer_ids=aux_layer_ids(spec, layers),
        torch_dtype=dtype,
    )
    cfg.update(
        eagle_ttt_steps=spec.ttt_steps,
        eagle_offline=offline,
        eagle_decoder_type="llama",
        # torch.compile of the draft costs minutes per shape on CPU and is optional for correctness
        eagle_use_torch_compile=False,
        # the export keeps the rope the draft trains with (ModelOpt's default adds a yarn override)
        eagle_export_rope_scaling={},
    )
    return cfg


def convert(model, spec: DraftSpec, d2t=None, offline: bool = False, num_layers: Optional[int] = None):
    """`mtsp.convert` in place; returns the converted model (target frozen, draft trainable)."""
    import modelopt.torch.speculative as mtsp

    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    cfg = eagle_config(model.config, spec, dtype, offline=offline, num_layers=num_layers)
    mtsp.convert(model, [("eagle", cfg)])
    return set_draft_vocab(model, d2t)


def set_draft_vocab(model, d2t):
    """The draft's vocabulary mapping (d2t) into a converted model whose draft vocabulary is
    smaller than the target's (ModelOpt allocates it at convert)."""
    import torch

    if hasattr(model.eagle_module, "d2t"):
        if d2t is None:
            raise ValueError("draft_vocab_size < target vocab needs the d2t mapping (optmodel.speculative.vocab)")
        with torch.no_grad():
            model.eagle_module.d2t.copy_(d2t.to(model.eagle_module.d2t.device))
    return model


def load_offline_base(target_dir: str):
    """The target's embeddings and LM head only (ModelOpt's FakeBaseModel): offline training
    never holds the target's decoder layers in memory."""
    from modelopt.torch.speculative.utils import load_vlm_or_llm

    return load_vlm_or_llm(str(target_dir), use_fake_base=True, use_offline_training=True)
