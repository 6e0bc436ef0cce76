"""Cross-field checks of a composed run config.

Every check appends to one list, so a user sees *all* problems of a config in one error
before any model is loaded. Each problem names the field and says how to fix it. What is
particular to a task is asked of its spec (optmodel/tasks/<name>/spec.py), handed in by the
caller (optmodel/run.py asks the task registry). Nothing here imports torch, transformers or
ModelOpt, nor any task, backend or evaluation code: only optmodel.facts.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional

from omegaconf import DictConfig

from optmodel.config.family_checks import family_problems
from optmodel.facts import choices
from optmodel.facts.checkpoint import checkpoint_problems
from optmodel.facts.errors import ConfigError, one_of
from optmodel.facts.hf_families import FAMILIES
from optmodel.facts.layout import expert_tensor_size, launched_world_size, pipeline_stage_layers, world_size_problems
from optmodel.facts.machine import cuda_visible, runs_on_cpu, transformer_engine_installed
from optmodel.facts.records import source_problems
from optmodel.facts.rundir import is_distributed_checkpoint, read_origin, run_dir_problems, saved_model_path

__all__ = ["ConfigError", "config_problems", "validate", "one_of"]


def model_problems(model: DictConfig) -> List[str]:
    problems = []
    if (p := one_of("model.family", model.family, FAMILIES)):
        problems.append(p)
    for key in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "kv_channels", "vocab_size"):
        if model[key] < 1:
            problems.append(f"model.{key}: must be a positive integer, got {model[key]}.")
    if model.mla is None and model.num_query_groups is None:
        problems.append("model.num_query_groups: required for non-MLA models (set it to the number of KV heads).")
    if model.num_query_groups and model.num_attention_heads % model.num_query_groups:
        problems.append(
            f"model.num_query_groups: {model.num_query_groups} query groups do not divide "
            f"{model.num_attention_heads} attention heads."
        )
    if model.padded_vocab_size is not None and model.padded_vocab_size < model.vocab_size:
        problems.append(
            f"model.padded_vocab_size: {model.padded_vocab_size} is smaller than vocab_size {model.vocab_size}."
        )
    moe = model.moe
    if moe is not None:
        if moe.top_k > moe.num_experts:
            problems.append(f"model.moe.top_k: {moe.top_k} exceeds num_experts {moe.num_experts}.")
        if moe.first_k_dense_layers >= model.num_layers:
            problems.append(
                f"model.moe.first_k_dense_layers: {moe.first_k_dense_layers} leaves no MoE layer "
                f"in {model.num_layers} layers."
            )
        if (p := one_of("model.moe.router_score_function", moe.router_score_function, choices.ROUTER_SCORE_FUNCTIONS)):
            problems.append(p)
    return problems


def parallel_problems(model: DictConfig, par: DictConfig) -> List[str]:
    """Does the parallel layout fit the architecture? (independent of the launch)"""
    problems = []
    name = f"parallel={par.name}"
    for key in ("tensor", "pipeline", "expert", "context"):
        if par[key] < 1:
            problems.append(f"parallel.{key}: must be >= 1, got {par[key]}.")
    if problems:
        return problems
    tp = par.tensor
    groups = model.num_query_groups
    heads = model.num_attention_heads
    if heads % tp or (groups is not None and groups % tp):
        what = f"{heads} attention heads" + (f" and {groups} query groups" if groups is not None else "")
        problems.append(
            f"parallel.tensor: TP {tp} ({name}) must divide the {what} of model {model.name}. "
            f"Fix: pick a tensor size that divides both, e.g. parallel.tensor="
            f"{max(d for d in range(1, tp + 1) if heads % d == 0 and (groups is None or groups % d == 0))}."
        )
    if model.ffn_hidden_size % tp:
        problems.append(
            f"parallel.tensor: TP {tp} ({name}) must divide ffn_hidden_size {model.ffn_hidden_size} of model {model.name}."
        )
    if par.sequence_parallel and tp == 1:
        problems.append("parallel.sequence_parallel: needs parallel.tensor > 1 (it splits activations across TP ranks).")
    ep = par.expert
    if model.moe is None:
        if ep != 1:
            problems.append(
                f"parallel.expert: EP {ep} ({name}) needs a mixture-of-experts model; {model.name} is dense. "
                f"Fix: parallel.expert=1."
            )
    else:
        experts = model.moe.num_experts
        if experts % ep:
            problems.append(
                f"parallel.expert: EP {ep} ({name}) must divide the {experts} experts of model {model.name}."
            )
        etp = expert_tensor_size(par)
        if model.moe.ffn_hidden_size % etp:
            problems.append(
                f"parallel.expert_tensor: ETP {etp} must divide moe ffn_hidden_size {model.moe.ffn_hidden_size}."
            )
    try:
        pipeline_stage_layers(model.num_layers, par)
    except ValueError as err:
        problems.append(
            f"parallel.pipeline: {name} (PP {par.pipeline}): {err}; model {model.name} has {model.num_layers} layers. "
            f"Fix: set parallel.pipeline_first_stage_layers / parallel.pipeline_last_stage_layers (or "
            f"parallel.pipeline) so the stages sum to {model.num_layers}."
        )
    return problems


def launch_problems(cfg: DictConfig, world: int) -> List[str]:
    """Does the launched process count fit the layout, and can the backend run it?"""
    par = cfg.parallel
    problems = []
    if cfg.backend.name == "hf" and (par.tensor, par.pipeline, par.expert, par.context) != (1, 1, 1, 1):
        problems.append(
            f"backend: backend=hf runs the whole model in one process and cannot use parallel={par.name} "
            f"(TP {par.tensor}, PP {par.pipeline}, EP {par.expert}, CP {par.context}). "
            f"Fix: parallel=single, or a model-parallel backend."
        )
    if cfg.backend.name == "megatron":
        problems += megatron_problems(cfg)
    return problems + world_size_problems(par, world)


def megatron_problems(cfg: DictConfig) -> List[str]:
    """backend=megatron settings the layout depends on."""
    problems = []
    if (p := one_of("backend.token_dispatcher", cfg.backend.token_dispatcher, choices.TOKEN_DISPATCHERS)):
        problems.append(p)
    if cfg.model.family not in choices.MEGATRON_FAMILIES:
        problems.append(
            f"model.family: backend=megatron does not build {cfg.model.family} models yet (model {cfg.model.name}); "
            f"it builds {', '.join(choices.MEGATRON_FAMILIES)}. Fix: backend=hf."
        )
    return problems


def machine_problems(cfg: DictConfig) -> List[str]:
    """What this machine lacks for the run: a GPU asked for, megatron's CUDA / Transformer-Engine
    paths. A dry run plans for the cluster, so it lists these as notes instead of refusing."""
    problems = []
    if cfg.backend.device == "cuda" and not cuda_visible():
        problems.append("backend.device: cuda was asked for but no NVIDIA GPU is visible. Fix: backend.device=auto or cpu.")
    return problems + megatron_machine_problems(cfg)


def megatron_machine_problems(cfg: DictConfig) -> List[str]:
    """backend=megatron settings that this machine cannot run (a dry run plans for another
    machine, so it lists these as notes instead of refusing)."""
    if cfg.backend.name != "megatron":
        return []
    problems = []
    on_cpu = runs_on_cpu(cfg.backend)
    if cfg.backend.token_dispatcher == "alltoall" and on_cpu:
        problems.append(
            "backend.token_dispatcher: alltoall needs CUDA (megatron-core overlaps its all-to-all on CUDA streams) "
            "and this run is on CPU. Fix: backend.token_dispatcher=allgather."
        )
    no_te = not transformer_engine_installed()
    if cfg.parallel.context > 1 and no_te:
        problems.append(
            f"parallel.context: CP {cfg.parallel.context} needs Transformer-Engine's attention (megatron-core's "
            f"local attention supports CP 1 only) and transformer_engine is not installed. "
            f"Fix: parallel.context=1, or run in a GPU image with Transformer-Engine."
        )
    if cfg.parallel.sequence_parallel and no_te:
        problems.append(
            "parallel.sequence_parallel: needs Transformer-Engine's norms (megatron-core's local spec uses torch "
            "norms, which do not support sequence parallel) and transformer_engine is not installed. "
            "Fix: parallel.sequence_parallel=false, or run in a GPU image with Transformer-Engine."
        )
    return problems


def group_name_problems(cfg: DictConfig, specs: Mapping[str, Any]) -> List[str]:
    checks = [
        ("task.name", cfg.task.name, specs),
        ("backend.name", cfg.backend.name, choices.BACKENDS),
        ("backend.device", cfg.backend.device, choices.DEVICES),
        ("backend.dtype", cfg.backend.dtype, ("auto",) + choices.DTYPES),
        ("data.source", cfg.data.source, choices.DATA_SOURCES),
        ("logger.name", cfg.logger.name, choices.LOGGERS),
        ("logger.mode", cfg.logger.mode, choices.WANDB_MODES),
    ]
    return [p for field, value, valid in checks if (p := one_of(field, value, valid))]


def data_problems(data: DictConfig, model: DictConfig) -> List[str]:
    problems = []
    for key in ("num_samples", "seq_len", "batch_size"):
        if data[key] < 1:
            problems.append(f"data.{key}: must be >= 1, got {data[key]}.")
    if data.eval_max_sequences < 0:
        problems.append(f"data.eval_max_sequences: must be >= 0 (0 = all), got {data.eval_max_sequences}.")
    if data.seq_len > model.max_position_embeddings:
        problems.append(
            f"data.seq_len: {data.seq_len} exceeds model {model.name}'s max_position_embeddings "
            f"{model.max_position_embeddings}."
        )
    if (p := one_of("data.packing", data.packing, choices.PACKING_MODES)):
        problems.append(p)
    if data.source == "hf" and not data.get("dataset"):
        problems.append("data.dataset: data.source=hf needs a dataset name or local dataset dir. Fix: data.dataset=<name>.")
    problems += source_problems(data)
    return problems


def task_problems(cfg: DictConfig, spec) -> List[str]:
    """The task's own checks (its spec's), and whether it runs on the chosen backend."""
    problems = []
    if cfg.backend.name in choices.BACKENDS and cfg.backend.name not in spec.backends:
        problems.append(
            f"backend: task={spec.name} does not run on backend={cfg.backend.name} (it runs on "
            f"{', '.join(spec.backends)}). Fix: backend={spec.backends[0]}."
        )
    if cfg.run.get("resume") and not spec.resumable:
        problems.append(
            f"run.resume: task={spec.name} does not resume; it starts over. Fix: run.output_dir=<a new dir> (a "
            f"finished model of the earlier run stays loadable there with run.load=<its dir>, e.g. task=export)."
        )
    if spec.needs_earlier_model and not cfg.run.get("load"):
        problems.append(f"run.load: task={spec.name} {spec.needs_earlier_model}")
    if cfg.run.get("load") and not spec.reads_model:
        problems.append(f"run.load: task={spec.name} does not start from a model. Fix: run.load=null.")
    return problems + spec.problems(cfg) + spec.gate_problems(cfg)


def config_problems(cfg: DictConfig, specs: Mapping[str, Any], world_size: Optional[int] = None,
                    check_inputs: bool = True) -> List[str]:
    """All problems of a composed config; specs: every task's spec by name (the registry's).
    `world_size` None: the launched one. check_inputs=False skips what depends on this
    machine's files and libraries."""
    problems = group_name_problems(cfg, specs)
    problems += model_problems(cfg.model)
    if not any(p.startswith("model.") for p in problems):
        problems += parallel_problems(cfg.model, cfg.parallel)
    problems += launch_problems(cfg, launched_world_size(cfg) if world_size is None else world_size)
    problems += data_problems(cfg.data, cfg.model)
    problems += family_problems(cfg)
    if not any(p.startswith("task.name:") for p in problems):
        problems += task_problems(cfg, specs[cfg.task.name])
    if check_inputs:
        problems += machine_problems(cfg)
        load_problems = run_dir_problems(cfg.run.load, backend=cfg.backend.name) if cfg.run.get("load") else []
        problems += load_problems
        if not load_problems:  # with run.load, model.checkpoint is that run's saved model (config/inherit.py)
            problems += checkpoint_problems(cfg.model, field="run.load" if cfg.run.get("load") else "model.checkpoint",
                                            compare_architecture=not _loads_distributed_checkpoint(cfg))
    return problems


def _loads_distributed_checkpoint(cfg: DictConfig) -> bool:
    """run.load's saved model is megatron's distributed checkpoint: its shape is the manifest's
    (e.g. pruned), and model.checkpoint stays the HF dir of its tokenizer and export reference."""
    saved = saved_model_path(read_origin(cfg.run.get("load")) or {})
    return saved is not None and is_distributed_checkpoint(saved)


def validate(cfg: DictConfig, specs: Mapping[str, Any], world_size: Optional[int] = None,
             check_inputs: bool = True) -> None:
    """Raise ConfigError listing every problem; return quietly when the config can run."""
    problems = config_problems(cfg, specs, world_size=world_size, check_inputs=check_inputs)
    if problems:
        raise ConfigError(problems)
