"""The exported EAGLE3 draft: `export_speculative_decoding`, and its reload onto a target.

The export is the layout vLLM / SGLang / TensorRT-LLM load: config.json naming
`LlamaForCausalLMEagle3` with `draft_vocab_size` and the EAGLE3 settings, and
model.safetensors with the draft layers, `fc`, `norm`, `lm_head` and `d2t`, then rewritten
in one engine's conventions (optmodel.speculative.serving: aux ids, tensor names, rope)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from optmodel.manifest import atomic_dir
from optmodel.speculative import serving
from optmodel.speculative.convert import DraftSpec, convert, rope_theta, text_config
from optmodel.speculative.serving import trained_aux_ids


def export(model, out_dir: Path, notes: Optional[Dict[str, dict]] = None, deploy: str = "none") -> Path:
    """`export_speculative_decoding` into `out_dir` atomically, in `deploy`'s conventions,
    plus `notes` as json files."""
    from modelopt.torch.export import export_speculative_decoding

    out_dir = Path(out_dir)
    eagle = model.eagle_config
    with atomic_dir(out_dir) as partial:
        export_speculative_decoding(model, export_dir=partial)
        serving.write(partial, deploy, list(eagle.eagle_aux_hidden_state_layer_ids), rope_theta(eagle),
                      int(getattr(model.config, "num_orig_hidden_layers", 0) or text_config(model.config).num_hidden_layers))
        for name, content in (notes or {}).items():
            (partial / name).write_text(json.dumps(content, indent=2))
    return out_dir


def spec_of_export(draft_dir: Path):
    """The DraftSpec an exported config.json describes."""
    conf = json.loads((Path(draft_dir) / "config.json").read_text())
    return DraftSpec(num_layers=conf["num_hidden_layers"], aux_layer_ids=trained_aux_ids(draft_dir, conf),
                     draft_vocab_size=conf["draft_vocab_size"], intermediate_size=conf["intermediate_size"]), conf


def attach(target_model, draft_dir: Path):
    """Convert `target_model` with the exported draft's shape and load its weights.

    An engine export is read back in ModelOpt's terms (aux ids from its deploy note, tensor
    names); the draft is rebuilt with the plain rope of the target's theta it trained with."""
    import torch
    from safetensors.torch import load_file

    spec, conf = spec_of_export(draft_dir)
    deploy = (serving.read_note(draft_dir) or {}).get("deploy", "none")
    weights = {serving.modelopt_name(k, deploy): v for k, v in load_file(str(Path(draft_dir) / "model.safetensors")).items()}
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
