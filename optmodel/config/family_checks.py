"""What the Llama-4 and gpt-oss families need from the rest of the config (light imports:
validation calls this before anything heavy loads)."""

from __future__ import annotations

import json
from typing import List

from omegaconf import DictConfig

from optmodel.facts.checkpoint import resolve_checkpoint
from optmodel.facts.layout import expert_tensor_size

LLAMA4_MEGATRON_MAX_SEQ_LEN = 8191  # optmodel.backends.megatron_families.LLAMA4_MAX_SEQ_LEN
# Expert tensor parallelism ModelOpt 0.46's importer gets wrong or refuses (measured on the
# tiny models at TP 2: ETP 1 matches transformers to 7e-6, Llama-4 at ETP 2 is off by 1.5).
ETP_REFUSALS = {
    "gpt_oss": "ModelOpt 0.46's gpt-oss importer splits experts over EP only ('ETP is not supported for gpt-oss model')",
    "llama4": "ModelOpt 0.46's Llama-4 importer, splitting the packed expert weights over expert tensor ranks, "
              "builds experts that do not reproduce transformers' (measured at TP 2 / ETP 2: logits off by 1.5; "
              "ETP 1 matches)",
}


# The attention a family needs from transformers when backend.attn_implementation=auto.
FAMILY_ATTENTION = {"gpt_oss": "eager"}  # its attention sinks run in eager (or flash / flex) attention only


def attention_implementation(backend: DictConfig, model: DictConfig) -> str:
    """backend.attn_implementation made concrete: `auto` is what the model's family needs (sdpa
    unless FAMILY_ATTENTION says otherwise); anything else is what the user asked for."""
    chosen = backend.get("attn_implementation") or "auto"
    return FAMILY_ATTENTION.get(model.get("family"), "sdpa") if chosen == "auto" else chosen


def family_problems(cfg: DictConfig) -> List[str]:
    model, backend = cfg.model, cfg.backend
    problems = []
    if model.family == "gpt_oss" and backend.name == "hf" and attention_implementation(backend, model) == "sdpa":
        problems.append(
            f"backend.attn_implementation: transformers runs gpt-oss's attention sinks in eager (or flash / flex) "
            f"attention only, not sdpa (model {model.name}). Fix: backend.attn_implementation=auto (eager for "
            f"gpt-oss), or eager."
        )
    if backend.name != "megatron":
        return problems
    if model.family == "llama4" and cfg.data.seq_len > LLAMA4_MEGATRON_MAX_SEQ_LEN:
        problems.append(
            f"data.seq_len: Llama-4 attends in 8192-token chunks on its rope layers and scales attention by "
            f"position on its NoPE layers from position 8192 on; megatron-core 0.16 implements neither (with or "
            f"without Transformer-Engine), so backend=megatron reproduces {model.name} up to "
            f"{LLAMA4_MEGATRON_MAX_SEQ_LEN} tokens only, not {cfg.data.seq_len}. Fix: data.seq_len<="
            f"{LLAMA4_MEGATRON_MAX_SEQ_LEN}, or backend=hf."
        )
    etp = expert_tensor_size(cfg.parallel)
    if etp > 1 and model.family in ETP_REFUSALS:
        problems.append(
            f"parallel.expert_tensor: {ETP_REFUSALS[model.family]} (expert tensor parallel {etp}; parallel.expert_tensor "
            f"null means = parallel.tensor). Fix: parallel.expert_tensor=1 (whole experts on each rank; "
            f"parallel.expert=N spreads them)."
        )
    return problems


def awq_export_problems(cfg: DictConfig) -> List[str]:
    """A quantized Hugging Face export of an AWQ format of a MoE family ModelOpt cannot resmooth
    (the quantizing task asks when it exports)."""
    model, task = cfg.model, cfg.task
    if model.family not in ("llama4", "gpt_oss") or task.get("recipe") or "AWQ" not in str(task.get("quant_cfg")):
        return []
    return [f"task.export: ModelOpt 0.46's Hugging Face exporter cannot export AWQ formats of {model.family} MoE "
            f"models ({task.quant_cfg}): it resmooths experts only for Mixtral, Qwen-MoE, Nemotron-H and Gemma-4 "
            f"(get_experts_list raises NotImplementedError). Fix: task.export=false to quantize and evaluate in "
            f"memory, or a non-AWQ format (FP8_DEFAULT_CFG, NVFP4_DEFAULT_CFG)."]


def megatron_export_problems(cfg: DictConfig) -> List[str]:
    """What ModelOpt's Megatron exporter has no rules for (every task exporting from megatron asks)."""
    model = cfg.model
    if cfg.backend.name != "megatron" or model.family != "llama4" or _architectures(model) != ["Llama4ForCausalLM"]:
        return []
    return [f"model.checkpoint: ModelOpt 0.46's Megatron exporter has rules for Llama4ForConditionalGeneration (the "
            f"released Scout / Maverick checkpoints) only, and {model.name} is a text-only Llama4ForCausalLM. "
            f"Fix: backend=hf for this export, or task.export=false on backend=megatron."]


def _architectures(model) -> list:
    """config.json's `architectures` of the model's checkpoint ([] when unreadable: the
    checkpoint checks report that)."""
    ckpt = resolve_checkpoint(model)
    try:
        return list(json.loads((ckpt / "config.json").read_text()).get("architectures") or []) if ckpt else []
    except (OSError, ValueError):
        return []
