"""The ModelOpt quantization config a run asks for: a named format or a PTQ recipe, plus options.

ModelOpt 0.46 configs hold `quant_cfg` as an ordered list of `{"quantizer_name": pattern,
"cfg" | "enable": ...}` entries where later entries win, so every option here appends entries.
"""

from __future__ import annotations

import copy
from typing import Any, Dict

from omegaconf import DictConfig

from optmodel.config.recipes import resolve_recipe_path
from optmodel.facts.choices import KV_CACHE_FORMATS

# Attention input projections across HF (q/k/v_proj, MLA q_a/q_b/kv_a/kv_b) and Megatron (linear_qkv, linear_q*, linear_kv*).
QKV_PATTERNS = (
    "*q_proj*", "*k_proj*", "*v_proj*", "*qkv_proj*", "*q_a_proj*", "*q_b_proj*", "*kv_a_proj*", "*kv_b_proj*",
    "*linear_qkv*", "*linear_q_proj*", "*linear_q_down_proj*", "*linear_q_up_proj*", "*linear_kv_down_proj*",
    "*linear_kv_up_proj*",
)


def load_recipe_config(recipe: str) -> Dict[str, Any]:
    """The `mtq.quantize` config of a PTQ recipe (ModelOpt's loader resolves its $imports)."""
    from modelopt.recipe import load_recipe

    loaded = load_recipe(resolve_recipe_path(recipe))
    return loaded.quantize.model_dump(exclude_none=True)


def named_config(name: str) -> Dict[str, Any]:
    """A copy of ModelOpt's config of that name (e.g. FP8_DEFAULT_CFG)."""
    import modelopt.torch.quantization as mtq

    return copy.deepcopy(getattr(mtq, name))


def base_config(task: DictConfig) -> Dict[str, Any]:
    return load_recipe_config(task.recipe) if task.recipe else named_config(task.quant_cfg)


def format_name(task: DictConfig) -> str:
    return f"recipe:{task.recipe}" if task.recipe else task.quant_cfg


def with_options(cfg: Dict[str, Any], task: DictConfig) -> Dict[str, Any]:
    """`cfg` with the KV-cache, weight-only and disable-QKV options of `task` applied."""
    import modelopt.torch.quantization as mtq

    cfg = copy.deepcopy(cfg)
    entries = list(cfg["quant_cfg"])
    kv_name = KV_CACHE_FORMATS[task.kv_cache]
    if kv_name is not None:
        entries += copy.deepcopy(getattr(mtq, kv_name)["quant_cfg"])
    if task.weight_only:
        entries.append({"quantizer_name": "*input_quantizer", "enable": False})
    if task.disable_qkv:
        entries += [{"quantizer_name": f"{p}quantizer", "enable": False} for p in QKV_PATTERNS]
    cfg["quant_cfg"] = entries
    return cfg


def build_quant_config(task: DictConfig) -> Dict[str, Any]:
    return with_options(base_config(task), task)
