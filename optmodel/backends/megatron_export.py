"""HF checkpoints from a megatron-core model through ModelOpt's Megatron exporters.

    write_with_modelopt(handle, out_dir, dtype, format)   every rank calls; each pipeline stage writes its layers

format hf: `export_mcore_gpt_to_hf` (unified checkpoint, hf_quant_config.json when
quantized); vllm_fq: `export_mcore_gpt_to_hf_vllm_fq` (bf16 weights + quantizer_state.pth).
Both start from a HF checkpoint dir (config.json, tokenizer, remote code) and update only
the dense shape in its config.json (layers, hidden, heads, groups, FFN). The model held may
have another shape than its HF checkpoint (a pruned run: fewer experts, a smaller expert
FFN): then the reference is a temporary copy of the checkpoint's non-weight files whose
config.json says the architecture this run's model config records.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from optmodel.facts.checkpoint import read_hf_config
from optmodel.facts.hf_config import architecture_mismatches, to_hf_config_dict
from optmodel.quantization.summary import quantizer_entries, summary_of

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def write_with_modelopt(handle, out_dir: Path, dtype: str, format: str = "hf") -> None:
    import torch

    if format == "hf":
        from modelopt.torch.export import export_mcore_gpt_to_hf as exporter
    else:
        from modelopt.torch.export.plugins.vllm_fakequant_megatron import export_mcore_gpt_to_hf_vllm_fq as exporter
    with hf_reference(handle.checkpoint, handle.cfg.model) as reference:
        exporter(handle.model, str(reference), dtype=getattr(torch, dtype), export_dir=str(out_dir),
                 trust_remote_code=bool(handle.cfg.model.trust_remote_code))


@contextlib.contextmanager
def hf_reference(checkpoint: Path, model_cfg) -> Iterator[Path]:
    """`checkpoint` when its config.json describes `model_cfg`; else a temporary copy of its
    non-weight files with config.json rewritten to `model_cfg`'s architecture."""
    hf = read_hf_config(checkpoint)
    if not architecture_mismatches(model_cfg, hf):
        yield checkpoint
        return
    with tempfile.TemporaryDirectory(prefix="optmodel-export-reference-") as tmp:
        for path in checkpoint.iterdir():
            if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES) and not path.name.endswith(".index.json"):
                shutil.copy2(path, tmp)
        (Path(tmp) / "config.json").write_text(json.dumps(_merged(hf, to_hf_config_dict(model_cfg)), indent=2))
        yield Path(tmp)


def _merged(base: dict, produced: dict) -> dict:
    """`base` (the checkpoint's config.json: keeps what ModelConfig does not describe, e.g.
    Llama-4's vision_config) with every field of `produced` replacing it, nested blocks merged.
    A field is also written under the name transformers reads it by (its config class's
    attribute_map: Qwen3-MoE's num_experts is num_local_experts), so the checkpoint's value
    under that name does not win."""
    from transformers import CONFIG_MAPPING

    model_type = produced.get("model_type", base.get("model_type"))
    aliases = CONFIG_MAPPING[model_type].attribute_map if model_type in CONFIG_MAPPING else {}
    out = dict(base)
    for key, value in produced.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            value = _merged(base[key], value)
        out[key] = value
        if key in aliases:
            out[aliases[key]] = value
    return _per_layer_lists_resized(out, produced)


def _per_layer_lists_resized(config: dict, produced: dict) -> dict:
    """A depth-pruned model keeps the checkpoint's per-layer `layer_types` unless ModelConfig
    wrote its own (gpt-oss): transformers refuses a list longer than num_hidden_layers. A
    uniform list is resized; a mixed one cannot say which layers survived."""
    types, layers = config.get("layer_types"), config.get("num_hidden_layers")
    if "layer_types" in produced or not isinstance(types, list) or layers is None or len(types) == layers:
        return config
    if len(set(types)) > 1:
        raise ValueError(f"config.json's layer_types ({len(types)} entries of several kinds) cannot follow the model's "
                         f"{layers} layers: which layers survived is not recorded")
    return {**config, "layer_types": types[:1] * layers}


def quantizer_summary(model) -> dict:
    """optmodel.quantization.summary's record of the whole model, on every rank: each rank's
    quantizers under the names one rank holding every layer and expert would use, merged
    across ranks (TP / DP replicas fold into one name; PP stages and EP ranks add theirs)."""
    import torch.distributed as dist

    entries = quantizer_entries(model, global_module_names(model))
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, entries)
        entries = {key: {name: value for rank in gathered for name, value in rank[key].items()} for key in entries}
    return summary_of(entries)


def global_module_names(model):
    """fn(this rank's module name) -> the module's name in the whole model: a pipeline stage
    numbers its decoder layers from 0, an expert-parallel rank its local experts from 0."""
    import re

    from megatron.core import parallel_state

    layer_of = {str(i): str(layer.layer_number - 1) for i, layer in enumerate(model.decoder.layers)}
    experts = model.config.num_moe_experts
    first_expert = (parallel_state.get_expert_model_parallel_rank()
                    * (experts // parallel_state.get_expert_model_parallel_world_size()) if experts else 0)

    def rename(name: str) -> str:
        name = re.sub(r"^decoder\.layers\.(\d+)(?=\.|$)", lambda m: f"decoder.layers.{layer_of[m.group(1)]}", name)
        return re.sub(r"\.local_experts\.(\d+)(?=\.|$)", lambda m: f".local_experts.{first_expert + int(m.group(1))}", name)

    return rename
