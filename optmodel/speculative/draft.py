"""The exported EAGLE3 draft: `export_speculative_decoding`, and its reload onto a target.

The export is the layout vLLM / SGLang / TensorRT-LLM load: config.json naming
`LlamaForCausalLMEagle3` with `draft_vocab_size` and the EAGLE3 settings, and
model.safetensors with the draft layers, `fc`, `norm`, `lm_head` and `d2t`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from optmodel.manifest import atomic_dir


def export(model, out_dir: Path, notes: Optional[Dict[str, dict]] = None) -> Path:
    """`export_speculative_decoding` into `out_dir` atomically, plus `notes` as json files."""
    from modelopt.torch.export import export_speculative_decoding

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as partial:
        export_speculative_decoding(model, export_dir=partial)
        for name, content in (notes or {}).items():
            (partial / name).write_text(json.dumps(content, indent=2))
    return out_dir


def spec_of_export(draft_dir: Path):
    """The DraftSpec an exported config.json describes."""
    from optmodel.speculative.convert import DraftSpec

    conf = json.loads((Path(draft_dir) / "config.json").read_text())
    return DraftSpec(num_layers=conf["num_hidden_layers"],
                     aux_layer_ids=list(conf["eagle_config"]["eagle_aux_hidden_state_layer_ids"]),
                     draft_vocab_size=conf["draft_vocab_size"], intermediate_size=conf["intermediate_size"]), conf


def attach(target_model, draft_dir: Path):
    """Convert `target_model` with the exported draft's shape and load its weights.

    The export's rope_scaling is ModelOpt's serving-time long-context override; the draft
    was trained with the plain rope of the same theta, which is what is rebuilt here."""
    import torch
    from safetensors.torch import load_file

    from optmodel.speculative.convert import convert

    spec, conf = spec_of_export(draft_dir)
    weights = load_file(str(Path(draft_dir) / "model.safetensors"))
    target_model = convert(target_model, spec, d2t=weights.get("d2t"))
    module = target_model.eagle_module
    own = module.state_dict()
    if "lm_head.weight" not in own:  # the export copies the target's LM head when the draft shares it
        weights.pop("lm_head.weight", None)
    missing = set(own) - set(weights)
    unexpected = set(weights) - set(own)
    if missing or unexpected:
        raise ValueError(f"{draft_dir} does not fit this target: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    for key, value in weights.items():
        if own[key].shape != value.shape:
            raise ValueError(f"{draft_dir}: {key} is {tuple(value.shape)}, the target's draft needs {tuple(own[key].shape)}")
    with torch.no_grad():
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
    target_model.eval()
    return target_model
