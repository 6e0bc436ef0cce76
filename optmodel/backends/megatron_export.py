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
    from optmodel.models.checkpoint import read_hf_config
    from optmodel.models.hf_config import architecture_mismatches, to_hf_config_dict

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
    Llama-4's vision_config) with every field of `produced` replacing it, nested blocks merged."""
    out = dict(base)
    for key, value in produced.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out
