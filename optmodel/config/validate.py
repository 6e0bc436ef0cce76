"""Cross-field checks of a composed run config.

Every check appends to one list, so a user sees *all* problems of a config in one error
before any model is loaded. Each problem names the field and says how to fix it.
Nothing here imports torch, transformers or ModelOpt.
"""

from __future__ import annotations

import difflib
import os
from typing import Iterable, List, Optional

from omegaconf import DictConfig

from optmodel.config import choices
from optmodel.config.family_checks import family_problems
from optmodel.data.text import source_problems
from optmodel.models.checkpoint import checkpoint_problems
from optmodel.tasks import TASKS


class ConfigError(ValueError):
    """A run config that cannot run; `problems` lists each reason."""

    def __init__(self, problems: List[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"optmodel config is not valid, found {len(self.problems)} problem(s):\n{lines}")


def one_of(field: str, value, valid: Iterable[str]) -> Optional[str]:
    """A problem sentence when `value` is not a valid name, with close matches first."""
    valid = list(valid)
    if value in valid:
        return None
    close = difflib.get_close_matches(str(value), valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"{field}: unknown value {value!r}.{hint} Valid: {', '.join(valid)}."


def _launched(world: int) -> str:
    return f"{world} {'was' if world == 1 else 'were'} launched"


def launched_world_size(cfg: DictConfig) -> int:
    """Processes this run was launched with: run.world_size, else WORLD_SIZE, else 1."""
    if cfg.run.world_size is not None:
        return int(cfg.run.world_size)
    return int(os.environ.get("WORLD_SIZE", "1"))


def pipeline_stage_layers(num_layers: int, par: DictConfig) -> List[int]:
    """Layers on each pipeline stage, or ValueError saying why the split is impossible.

    Uneven splits fix the first and/or last stage (Megatron's
    --decoder-first/last-pipeline-num-layers); the stages between share the rest evenly.
    """
    pp = par.pipeline
    first, last = par.pipeline_first_stage_layers, par.pipeline_last_stage_layers
    if first is None and last is None:
        if num_layers % pp:
            raise ValueError(f"{num_layers} layers do not divide into {pp} equal pipeline stages")
        return [num_layers // pp] * pp
    if pp < 2:
        raise ValueError("first/last stage layer counts need parallel.pipeline >= 2")
    fixed = [n for n in (first, last) if n is not None]
    if any(n < 1 for n in fixed):
        raise ValueError("first/last stage layer counts must be >= 1")
    rest = num_layers - sum(fixed)
    shared = pp - len(fixed)  # stages that split the rest evenly
    split = " + ".join(
        p
        for p in (
            f"{first} (first stage)" if first is not None else "",
            f"{shared} stage(s) x N" if shared else "",
            f"{last} (last stage)" if last is not None else "",
        )
        if p
    )
    if shared == 0:
        if rest != 0:
            raise ValueError(f"the split {split} holds {sum(fixed)} layers, not {num_layers}")
        return [first, last]
    if rest < shared or rest % shared:
        raise ValueError(
            f"the split {split} cannot hold {num_layers} layers: the remaining {rest} layers "
            f"do not divide evenly into {shared} stage(s)"
        )
    per = rest // shared
    stages = [per] * pp
    if first is not None:
        stages[0] = first
    if last is not None:
        stages[-1] = last
    return stages


def model_problems(model: DictConfig) -> List[str]:
    problems = []
    from optmodel.models.hf_config import FAMILIES

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
        etp = par.expert_tensor if par.expert_tensor is not None else tp
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
    mp = par.tensor * par.pipeline * par.context
    if par.data is not None and mp * par.data != world:
        problems.append(
            f"parallel.data: TP {par.tensor} x PP {par.pipeline} x CP {par.context} x DP {par.data} = "
            f"{mp * par.data} processes, but {_launched(world)}. Fix: launch {mp * par.data} processes or "
            f"set parallel.data=null to derive it."
        )
    elif world % mp:
        problems.append(
            f"run.world_size: parallel={par.name} needs a multiple of TP x PP x CP = {mp} processes, "
            f"but {_launched(world)}. Fix: launch {mp} (or a multiple) processes, or pick a smaller layout."
        )
    if cfg.model.moe is not None:
        etp = par.expert_tensor if par.expert_tensor is not None else par.tensor
        emp = etp * par.expert * par.pipeline
        if world % emp:
            problems.append(
                f"run.world_size: expert layers need a multiple of ETP x EP x PP = {emp} processes, "
                f"but {_launched(world)}."
            )
    return problems


def megatron_problems(cfg: DictConfig) -> List[str]:
    """backend=megatron settings the layout depends on."""
    problems = []
    if cfg.task.name not in choices.MEGATRON_TASKS:
        problems.append(
            f"backend: task={cfg.task.name} does not run on backend=megatron yet (tasks that do: "
            f"{', '.join(choices.MEGATRON_TASKS)}). Fix: backend=hf."
        )
    if (p := one_of("backend.token_dispatcher", cfg.backend.token_dispatcher, choices.TOKEN_DISPATCHERS)):
        problems.append(p)
    if cfg.model.family not in choices.MEGATRON_FAMILIES:
        problems.append(
            f"model.family: backend=megatron does not build {cfg.model.family} models yet (model {cfg.model.name}); "
            f"it builds {', '.join(choices.MEGATRON_FAMILIES)}. Fix: backend=hf."
        )
    return problems


def megatron_machine_problems(cfg: DictConfig) -> List[str]:
    """backend=megatron settings that this machine cannot run (a dry run plans for another
    machine, so it lists these as notes instead of refusing)."""
    import importlib.util

    if cfg.backend.name != "megatron":
        return []
    problems = []
    on_cpu = cfg.backend.device == "cpu" or (cfg.backend.device == "auto" and not _cuda_visible())
    if cfg.backend.token_dispatcher == "alltoall" and on_cpu:
        problems.append(
            "backend.token_dispatcher: alltoall needs CUDA (megatron-core overlaps its all-to-all on CUDA streams) "
            "and this run is on CPU. Fix: backend.token_dispatcher=allgather."
        )
    no_te = importlib.util.find_spec("transformer_engine") is None
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


def convert_task_problems(cfg: DictConfig) -> List[str]:
    task = cfg.task
    problems = []
    if (p := one_of("task.direction", task.direction, choices.CONVERT_DIRECTIONS)):
        return [p]
    if cfg.backend.name != "megatron":
        problems.append("backend: task=convert converts to / from megatron-core checkpoints. Fix: backend=megatron.")
    if task.direction == "megatron_to_hf":
        if cfg.parallel.tensor != 1:
            problems.append(
                f"parallel.tensor: export to Hugging Face needs TP 1, parallel={cfg.parallel.name} has TP "
                f"{cfg.parallel.tensor}: ModelOpt's Megatron exporter does not gather tensor-parallel shards. "
                f"Fix: parallel=export_pp (TP 1, split across pipeline stages; set parallel.pipeline to what fits)."
            )
        load = task.load
        if not load or not (
            os.path.isfile(os.path.join(load, "metadata.json")) or os.path.isfile(os.path.join(load, "model", "metadata.json"))
        ):
            problems.append(
                f"task.load: megatron_to_hf needs a megatron distributed checkpoint (a dir with metadata.json, or a "
                f"convert run dir holding model/), got {load!r}. Fix: task.load=<run dir of a hf_to_megatron convert>."
            )
    if (p := one_of("task.export_dtype", task.export_dtype, ("bfloat16", "float16", "float32"))):
        problems.append(p)
    return problems


def group_name_problems(cfg: DictConfig) -> List[str]:
    checks = [
        ("task.name", cfg.task.name, TASKS),
        ("backend.name", cfg.backend.name, choices.BACKENDS),
        ("backend.device", cfg.backend.device, choices.DEVICES),
        ("backend.dtype", cfg.backend.dtype, choices.DTYPES),
        ("data.source", cfg.data.source, choices.DATA_SOURCES),
        ("logger.name", cfg.logger.name, choices.LOGGERS),
        ("logger.mode", cfg.logger.mode, choices.WANDB_MODES),
    ]
    problems = [p for field, value, valid in checks if (p := one_of(field, value, valid))]
    if cfg.backend.device == "cuda" and not _cuda_visible():
        problems.append("backend.device: cuda was asked for but no NVIDIA GPU is visible. Fix: backend.device=auto or cpu.")
    return problems


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


def _on_cpu(cfg: DictConfig) -> bool:
    return cfg.backend.device == "cpu" or (cfg.backend.device == "auto" and not _cuda_visible())


def quant_format_problems(field: str, name: str, cfg: DictConfig) -> List[str]:
    """Problems of one ModelOpt format name used as a model format."""
    if (p := one_of(field, name, choices.QUANT_FORMATS)):
        return [p]
    if name in choices.KV_ONLY_QUANT_FORMATS:
        return [f"{field}: {name} quantizes only the KV cache. Fix: a model format plus task.kv_cache (e.g. task.kv_cache=fp8)."]
    if name in choices.MOE_ONLY_QUANT_FORMATS and cfg.model.moe is None:
        return [f"{field}: {name} quantizes MoE experts only and model={cfg.model.name} is dense. Fix: NVFP4_MLP_ONLY_CFG or NVFP4_DEFAULT_CFG."]
    if _on_cpu(cfg) and name in choices.CUDA_ONLY_QUANT_FORMATS:
        return [
            f"{field}: {name} needs CUDA kernels (Triton / CUDA extensions in ModelOpt 0.46) and this run is on CPU. "
            f"Fix: run on a GPU (backend.device=cuda), or on CPU pick e.g. NVFP4_DEFAULT_CFG, MXFP8_DEFAULT_CFG, FP8_DEFAULT_CFG, INT4_AWQ_CFG."
        ]
    return []


def quantize_problems(cfg: DictConfig) -> List[str]:
    from optmodel.quantization.formats import recipe_problems

    task, auto = cfg.task, cfg.task.auto_quantize
    problems = []
    if auto.enabled:
        if task.recipe:
            problems.append("task.recipe: auto_quantize searches task.auto_quantize.formats; a recipe cannot be combined. Fix: task.recipe=null.")
        if not auto.formats:
            problems.append("task.auto_quantize.formats: empty. Fix: e.g. [NVFP4_DEFAULT_CFG, FP8_DEFAULT_CFG].")
        for i, name in enumerate(auto.formats):
            problems += quant_format_problems(f"task.auto_quantize.formats[{i}]", name, cfg)
        if (p := one_of("task.auto_quantize.method", auto.method, choices.AUTO_QUANTIZE_METHODS)):
            problems.append(p)
        if not 0 < auto.effective_bits <= 16:
            problems.append(f"task.auto_quantize.effective_bits: must be in (0, 16], got {auto.effective_bits}.")
        if auto.score_size < 1:
            problems.append(f"task.auto_quantize.score_size: must be >= 1, got {auto.score_size}.")
        if cfg.parallel.pipeline > 1:
            problems.append(
                f"task.auto_quantize.enabled: auto-quantize scores every layer with one forward/backward through the "
                f"whole model, which ModelOpt does not split across pipeline stages (parallel.pipeline="
                f"{cfg.parallel.pipeline}). Fix: a layout with pipeline=1 (more tensor/expert parallelism), or a fixed format."
            )
    elif task.recipe:
        problems += recipe_problems(task.recipe)
    else:
        problems += quant_format_problems("task.quant_cfg", task.quant_cfg, cfg)
    if (p := one_of("task.kv_cache", task.kv_cache, choices.KV_CACHE_FORMATS)):
        problems.append(p)
    elif _on_cpu(cfg) and task.kv_cache == "nvfp4_rotate":
        problems.append("task.kv_cache: nvfp4_rotate needs fast_hadamard_transform (CUDA) and this run is on CPU. Fix: task.kv_cache=nvfp4 or fp8.")
    if (p := one_of("task.export_format", task.export_format, choices.EXPORT_FORMATS)):
        problems.append(p)
    if (p := one_of("task.export_dtype", task.export_dtype, ("bfloat16", "float16"))):
        problems.append(p)
    if task.compress:
        if cfg.backend.dtype == "float32":
            problems.append("task.compress: compressed weights dequantize to bfloat16/float16 in ModelOpt. Fix: backend.dtype=bfloat16.")
        if _on_cpu(cfg) and not task.auto_quantize.enabled and not task.recipe and task.quant_cfg.startswith(("INT4", "W4A8_AWQ")):
            problems.append(
                f"task.compress: ModelOpt 0.46's packed INT4 weights do not run forward on CPU ({task.quant_cfg}). "
                f"Fix: task.compress=false (fake-quant is numerically the same), or run on a GPU."
            )
    if len(task.generate.references) > len(task.generate.prompts):
        problems.append(
            f"task.generate.references: {len(task.generate.references)} references for {len(task.generate.prompts)} prompts. "
            f"Fix: one reference per prompt (the first ones), or none."
        )
    if cfg.backend.name == "megatron":
        unsupported = [
            ("task.auto_quantize.enabled", auto.enabled, "false"), ("task.compress", task.compress, "false"),
            ("task.generate.prompts", bool(task.generate.prompts), "[]"),
            ("task.export_format", task.export_format != "hf", "hf"), ("data.packing", cfg.data.packing != "pack", "pack"),
        ]
        for field, used, fix in unsupported:
            if used:
                problems.append(f"{field}: not available with backend=megatron (it runs on the transformers model). Fix: {field}={fix}, or backend=hf.")
        if task.export:
            from optmodel.backends.megatron import export_problems as megatron_export_problems

            problems += [p.replace("parallel.tensor:", "parallel.tensor (task.export=true):") for p in megatron_export_problems(cfg.parallel)]
    if cfg.run.get("load"):
        problems.append("run.load: task=quantize starts from model.checkpoint, not from an already-quantized run. Fix: run.load=null.")
    return problems


def export_problems(cfg: DictConfig) -> List[str]:
    problems = []
    if not cfg.run.get("load"):
        problems.append("run.load: task=export exports the quantized model of an earlier run. Fix: run.load=<quantize run dir>.")
    if (p := one_of("task.format", cfg.task.format, choices.EXPORT_FORMATS)):
        problems.append(p)
    if (p := one_of("task.dtype", cfg.task.dtype, ("bfloat16", "float16"))):
        problems.append(p)
    return problems


def task_problems(cfg: DictConfig) -> List[str]:
    problems = []
    if cfg.task.name == "quantize":
        problems += quantize_problems(cfg)
    elif cfg.task.name == "export":
        problems += export_problems(cfg)
    elif cfg.task.name == "convert":
        problems += convert_task_problems(cfg)
    from optmodel.evaluation.checks import evaluation_problems  # mmlu / eval / generate and task.evaluate

    problems += evaluation_problems(cfg)
    return problems


def load_problems(cfg: DictConfig) -> List[str]:
    """An earlier run dir to start from must be a finished run of the same model."""
    from optmodel.quantization.checkpoint import run_dir_problems

    if not cfg.run.get("load") or cfg.task.name == "quantize":
        return []
    return run_dir_problems(cfg.run.load, cfg.model.name)


def _cuda_visible() -> bool:
    """Whether a GPU is usable, without importing torch: checks the driver's device nodes."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


def config_problems(cfg: DictConfig, world_size: Optional[int] = None, check_inputs: bool = True) -> List[str]:
    """All problems of a composed config. `world_size` None: the launched one.
    check_inputs=False skips what depends on this machine's files and libraries."""
    problems = group_name_problems(cfg)
    problems += model_problems(cfg.model)
    if not any(p.startswith("model.") for p in problems):
        problems += parallel_problems(cfg.model, cfg.parallel)
    problems += launch_problems(cfg, launched_world_size(cfg) if world_size is None else world_size)
    problems += data_problems(cfg.data, cfg.model)
    problems += family_problems(cfg)
    problems += task_problems(cfg)
    if check_inputs:
        problems += megatron_machine_problems(cfg)
        problems += checkpoint_problems(cfg.model)
        problems += load_problems(cfg)
    return problems


def validate(cfg: DictConfig, world_size: Optional[int] = None, check_inputs: bool = True) -> None:
    """Raise ConfigError listing every problem; return quietly when the config can run."""
    problems = config_problems(cfg, world_size=world_size, check_inputs=check_inputs)
    if problems:
        raise ConfigError(problems)
