"""Find a model's Hugging Face checkpoint directory and check it before any weight is read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig

from optmodel.facts.checkpoint_files import tokenizer_problems, weight_problems
from optmodel.facts.hf_config import architecture_mismatches
from optmodel.facts.paths import TINY_MODELS_DIR

WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")


def resolve_checkpoint(model: DictConfig) -> Optional[Path]:
    """The checkpoint directory of `model`: the bundled one for tiny models, else model.checkpoint."""
    if model.checkpoint:
        return Path(model.checkpoint).expanduser()
    if model.tiny:
        return TINY_MODELS_DIR / model.name
    return None


def read_hf_config(ckpt: Path) -> dict:
    with open(ckpt / "config.json") as f:
        return json.load(f)


def quantized_export_problem(ckpt: Path, hf: dict, field: str) -> Optional[str]:
    """A ModelOpt quantized export (hf_quant_config.json, quant_method modelopt) is for serving
    engines: transformers loads its FP8 / NVFP4 / INT4 weights without their scales, so every
    number measured on it would be wrong."""
    quant = hf.get("quantization_config") or {}
    if quant.get("quant_method") != "modelopt" and not (ckpt / "hf_quant_config.json").is_file():
        return None
    return (f"{field}: {ckpt} is a ModelOpt quantized export (quant_algo {quant.get('quant_algo', '?')}) for "
            f"serving engines; transformers loads its weights without their scales. Fix: evaluate the run that "
            f"made it (run.load=<that quantize run dir>: its quantized model with its ModelOpt state), or serve "
            f"the export with vLLM / SGLang / TensorRT-LLM and evaluate it there (README: Evaluating an export).")


def checkpoint_problems(model: DictConfig, field: str = "model.checkpoint", compare_architecture: bool = True) -> List[str]:
    """Missing, corrupt or mismatched checkpoints, as problem sentences (empty when fine).
    `field`: what the user set to point here (model.checkpoint, or run.load for a run's saved model).
    compare_architecture=False: the weights come from elsewhere (a distributed checkpoint), the
    checkpoint's config.json need not state their shape."""
    ckpt = resolve_checkpoint(model)
    if ckpt is None:
        return [
            f"model.checkpoint: model={model.name} needs a local Hugging Face checkpoint directory. "
            f"Fix: model.checkpoint=/path/to/{model.name} (a download of the model's HF repo)."
        ]
    if not ckpt.is_dir() and model.tiny and not model.checkpoint:
        return [
            f"model.checkpoint: the bundled {model.name} checkpoint is missing from {ckpt}. "
            f"Fix: rebuild it with `python -m optmodel.tinybuild --only {model.name}` (or reinstall optmodel)."
        ]
    if not ckpt.is_dir():
        return [f"{field}: {ckpt} is not a directory. Fix: point model.checkpoint at the HF checkpoint dir."]
    if not (ckpt / "config.json").is_file():
        return [f"{field}: {ckpt} has no config.json, so it is not a Hugging Face checkpoint."]
    try:
        hf = read_hf_config(ckpt)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [f"{field}: {ckpt / 'config.json'} is not valid JSON ({err}); the checkpoint is corrupt."]
    if (exported := quantized_export_problem(ckpt, hf, field)):
        return [exported]
    problems = []
    if not any(any(ckpt.glob(p)) for p in WEIGHT_PATTERNS):
        problems.append(
            f"{field}: {ckpt} holds no weights ({', '.join(WEIGHT_PATTERNS)}); the download is incomplete."
        )
    problems += weight_problems(ckpt, hf, field) + tokenizer_problems(ckpt, hf, field)
    if not compare_architecture:
        return problems
    try:
        problems += architecture_mismatches(model, hf)
    except ValueError as err:
        problems.append(f"{field}: {err}")
    return problems
