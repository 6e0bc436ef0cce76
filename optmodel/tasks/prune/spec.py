"""task=prune: its config and checks (see optmodel/tasks/prune/run.py for the workflow)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from optmodel.config.gate import GateConfig
from optmodel.facts.errors import one_of, positive
from optmodel.pruning import scores as score_files, targets
from optmodel.pruning.minitron import scores_problems
from optmodel.pruning.scores import shape_of
from optmodel.tasks.spec import EvaluateConfig, TaskConfig, TaskSpec, evaluate_problems

log = logging.getLogger("optmodel")
DEPTH_MEASURES = ("skip_loss", "cosine")


@dataclass
class ExportConfig:
    """The pruned sizes (Megatron-LM / ModelOpt names); unset ones keep the model's."""

    num_layers: Optional[int] = None  # depth target (Megatron-LM: TARGET_NUM_LAYERS)
    hidden_size: Optional[int] = None  # width target (TARGET_HIDDEN_SIZE)
    ffn_hidden_size: Optional[int] = None  # dense MLP size (TARGET_FFN_HIDDEN_SIZE)
    num_attention_heads: Optional[int] = None  # query heads, cut within their groups
    num_query_groups: Optional[int] = None  # KV heads (GQA groups)
    num_moe_experts: Optional[int] = None  # routed experts per MoE layer
    moe_ffn_hidden_size: Optional[int] = None  # per-expert MLP size
    moe_shared_expert_intermediate_size: Optional[int] = None  # shared-expert MLP size


def export_dict(task) -> Dict[str, int]:
    """The set entries of task.export_config."""
    return {k: v for k, v in OmegaConf.to_container(task.export_config).items() if v is not None}


@dataclass
class PruneTaskConfig(TaskConfig):
    name: str = "prune"
    # the target: one of these three
    export_config: ExportConfig = field(default_factory=ExportConfig)  # e.g. task.export_config.num_layers=24
    target_params: Optional[int] = None  # budget of total parameters: picks the architecture
    target_active_params: Optional[int] = None  # MoE: budget of parameters one token uses
    scores: Optional[str] = None  # importance scores of this model to reuse (a prune run dir, its prune_scores.pt or, megatron, its prune_scores_mcore)
    depth_importance: Optional[str] = None  # skip_loss | cosine; None: skip_loss on hf, mcore_minitron's cosine on megatron
    depth_batches: int = 2  # hf skip_loss: calibration batches each skipped-layer pass runs
    perplexity: bool = True  # held-out perplexity before and after
    save_model: bool = True  # <run dir>/model: the pruned HF checkpoint (megatron: distributed), for run.load
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    gate: GateConfig = field(default_factory=GateConfig)  # accuracy budget against the base this run measures


def resolve_export_config(cfg: DictConfig) -> Optional[Dict[str, int]]:
    """The export_config of the run's target (a budget resolved to the best-fitting shape)."""
    task = cfg.task
    if export_dict(task):
        return export_dict(task)
    budget = task.target_params if task.target_params is not None else task.target_active_params
    if budget is None:
        return None
    best, _ = targets.resolve_budget(cfg.model, int(budget), active=task.target_params is None)
    return best


def _budget_problems(cfg: DictConfig) -> List[str]:
    task = cfg.task
    fld = "task.target_params" if task.target_params is not None else "task.target_active_params"
    budget = task.target_params if task.target_params is not None else task.target_active_params
    active = task.target_params is None
    if active and cfg.model.moe is None:
        return [f"task.target_active_params: model {cfg.model.name} is dense (active = total). Fix: task.target_params."]
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        return [f"{fld}: must be a positive integer (parameters), got {budget!r}."]
    total, act = targets.parameters(targets._plain(cfg.model))
    now = act if active else total
    if budget >= now:
        return [f"{fld}: {budget:,} is not below the model's {now:,} {'active ' if active else ''}parameters. "
                f"Fix: a smaller budget."]
    best, smallest = targets.resolve_budget(cfg.model, budget, active=active)
    if best is None:
        return [f"{fld}: no candidate of the search space (depth down to {1 - targets.MAX_DEPTH_PRUNING:.0%}, widths down "
                f"to {1 - targets.MAX_WIDTH_PRUNING:.0%}) fits {budget:,}; the smallest has {smallest:,}. Fix: a budget "
                f">= {smallest:,}, or an explicit task.export_config."]
    return []


def problems(cfg: DictConfig) -> List[str]:
    task = cfg.task
    found: List[str] = []
    given = [f for f, v in (("task.export_config", bool(export_dict(task))), ("task.target_params", task.target_params
             is not None), ("task.target_active_params", task.target_active_params is not None)) if v]
    if not given:
        found.append("task.export_config: task=prune needs a target. Fix: task.export_config.num_layers=3 (any of "
                     f"{', '.join(targets.EXPORT_KEYS)}), or task.target_params=<parameters>.")
    elif len(given) > 1:
        found.append(f"{given[1]}: set one target, not {' and '.join(given)}. Fix: keep one of them.")
    elif export_dict(task):
        export = export_dict(task)
        # megatron prunes in place at any layout: the stages keep whichever layers survive
        errs, warns = targets.export_problems(cfg.model, export, cfg.parallel if cfg.backend.name != "megatron" else None)
        found += errs
        for w in warns:
            log.warning("%s", w)
    else:
        found += _budget_problems(cfg)
    if task.depth_importance is not None and (p := one_of("task.depth_importance", task.depth_importance, DEPTH_MEASURES)):
        found.append(p)
    found += positive("task.depth_batches", task.depth_batches)
    if cfg.backend.name == "megatron":
        found += _megatron_problems(cfg)
    else:
        found += score_files.problems(task.scores, model=OmegaConf.to_container(cfg.model, resolve=True))
    return found + evaluate_problems(task.evaluate)


# What mcore_minitron (ModelOpt 0.46.1) cannot do on a family's megatron model, by family
MEGATRON_FAMILY_REFUSALS = {
    "llama4": "its NoPE layers are a per-layer list (no_rope_freq) and per-layer spec edits that mcore_minitron's "
              "depth pruning does not slice, and its width pruning is not verified here",
    "gpt_oss": "its learned attention sinks (one per head) are not sliced by mcore_minitron's attention, and its "
               "sliding-window / biased layers are not verified here",
}


def _megatron_problems(cfg: DictConfig) -> List[str]:
    """What backend=megatron's mcore_minitron refuses (it asserts TP 1, EP 1, no sequence or
    context parallelism: pipeline stages are its way to spread memory), before loading."""
    task, model, par = cfg.task, cfg.model, cfg.parallel
    found = []
    if model.family in MEGATRON_FAMILY_REFUSALS:
        found.append(f"backend: task=prune of model {model.name} on backend=megatron: "
                     f"{MEGATRON_FAMILY_REFUSALS[model.family]}. Fix: backend=hf.")
    for fld, value in (("parallel.tensor", par.tensor), ("parallel.expert", par.expert), ("parallel.context", par.context)):
        if value != 1:
            found.append(f"{fld}: ModelOpt's mcore_minitron prunes at tensor, expert and context parallel size 1 "
                         f"(parallel={par.name} has {value}). Fix: {fld}=1; pipeline stages (parallel.pipeline) "
                         f"spread the memory instead, as Megatron-LM's prune.sh does.")
    if par.sequence_parallel:
        found.append("parallel.sequence_parallel: ModelOpt's mcore_minitron does not prune with sequence parallelism. "
                     "Fix: parallel.sequence_parallel=false.")
    if task.export_config.num_query_groups is not None:
        found.append("task.export_config.num_query_groups: ModelOpt's mcore_minitron (0.46) no longer prunes query "
                     "groups. Fix: drop it, or backend=hf.")
    export = _resolved_or_empty(cfg)  # a budget's pick counts too
    if "num_layers" in export and model.moe is not None and targets.mixes_dense_and_moe(model):
        fld = "task.export_config.num_layers" if export_dict(task) else (
            "task.target_params" if task.target_params is not None else "task.target_active_params")
        found.append(f"{fld}: model {model.name} mixes dense and MoE layers; mcore_minitron may drop a dense one "
                     f"(num_layers {export['num_layers']}), which the model config (moe.first_k_dense_layers / "
                     f"moe.layer_freq) cannot then describe. Fix: prune width only on backend=megatron "
                     f"(task.export_config without num_layers), or depth on backend=hf.")
    if task.depth_importance == "skip_loss":
        found.append("task.depth_importance: backend=megatron ranks layers with mcore_minitron's own cosine measure. "
                     "Fix: task.depth_importance=cosine (or null).")
    if cfg.data.packing != "pack" and not task.scores:
        found.append(f"data.packing: backend=megatron scores on full (packed) sequences, got {cfg.data.packing}. "
                     f"Fix: data.packing=pack.")
    shape = shape_of(targets._plain(model))
    found += scores_problems(task.scores, shape, par)
    return found


def _resolved_or_empty(cfg: DictConfig) -> Dict[str, int]:
    try:
        return resolve_export_config(cfg) or {}
    except (TypeError, ValueError):  # an invalid budget: reported by _budget_problems
        return {}


SPEC = TaskSpec(name="prune", schema=PruneTaskConfig, problems=problems,
                backends=("hf", "megatron"), changes_model=True,
                outputs=lambda cfg, quantized: ("prune_scores",) * (not cfg.task.scores) + ("saved_model",) * cfg.task.save_model,
                sweep_axes=("parameters_after", "active_parameters_after"))
