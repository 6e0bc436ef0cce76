"""task=quantize: its config and checks (see optmodel/tasks/quantize/run.py for the workflow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from omegaconf import DictConfig

from optmodel.config.deploy import deploy_problems
from optmodel.config.family_checks import awq_export_problems
from optmodel.config.format_aliases import QFORMAT_ALIASES, canonical_format
from optmodel.config.gate import GateConfig
from optmodel.config.recipes import recipe_problems
from optmodel.facts import choices
from optmodel.facts.dtype import compute_dtype, expected_device
from optmodel.facts.errors import one_of
from optmodel.facts.machine import runs_on_cpu
from optmodel.facts.rundir import read_origin
from optmodel.tasks.spec import EvaluateConfig, TaskConfig, TaskSpec, evaluate_problems, export_layout_problems


@dataclass
class AutoQuantizeConfig:
    enabled: bool = False  # per-layer format search under effective_bits (mtq.auto_quantize)
    effective_bits: float = 4.8  # budget: weight bits per parameter over all quantizable layers
    formats: List[str] = field(default_factory=lambda: ["NVFP4_DEFAULT_CFG", "FP8_DEFAULT_CFG"])
    method: str = "gradient"  # gradient | kl_div
    score_size: int = 16  # calibration sequences used to score layer sensitivity
    checkpoint: Optional[str] = None  # search state; None: <run dir>/auto_quantize_search.pth (an old one resumes)
    disabled_layers: List[str] = field(default_factory=list)  # wildcard names kept unquantized (count at 16 bits)


@dataclass
class GenerationCheckConfig:
    prompts: List[str] = field(default_factory=list)  # greedy completions logged after quantizing
    references: List[str] = field(default_factory=list)  # expected completion prefixes; a mismatch fails the run
    max_new_tokens: int = 24


@dataclass
class QuantizeTaskConfig(TaskConfig):
    name: str = "quantize"
    quant_cfg: str = "FP8_DEFAULT_CFG"  # any name in modelopt's mtq.config.choices, or an hf_ptq short name (nvfp4)
    recipe: Optional[str] = None  # a ModelOpt PTQ recipe YAML (path or built-in name); replaces quant_cfg
    kv_cache: str = "none"  # none | fp8 | fp8_affine | nvfp4 | nvfp4_affine | nvfp4_rotate (choices.KV_CACHE_FORMATS)
    weight_only: bool = False  # keep activations in high precision
    disable_qkv: bool = False  # leave the attention q/k/v projections unquantized
    compress: bool = False  # store real low-bit weights in memory (mtq.compress) after calibration
    sync_expert_weight_amax: bool = False  # MoE (max calibration): one weight amax shared by a layer's experts
    perplexity: bool = True  # held-out perplexity before and after
    save_model: bool = True  # <run dir>/quantized (megatron: model/): restorable by run.load
    export: bool = True  # <run dir>/export
    export_format: str = "hf"  # hf (unified HF checkpoint) | vllm_fq (bf16 weights + quantizer amax)
    export_dtype: str = "bfloat16"
    deploy: str = "none"  # none | vllm | sglang | trtllm | any: refuse exports that engine's ModelOpt loader rejects
    auto_quantize: AutoQuantizeConfig = field(default_factory=AutoQuantizeConfig)
    generate: GenerationCheckConfig = field(default_factory=GenerationCheckConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    gate: GateConfig = field(default_factory=GateConfig)  # accuracy budget against the base this run measures


def quant_format_problems(field_name: str, name: str, cfg: DictConfig) -> List[str]:
    """Problems of one ModelOpt format name (or hf_ptq short name) used as a model format."""
    name = canonical_format(name)
    if (p := one_of(field_name, name, choices.QUANT_FORMATS)):
        return [p + f" (hf_ptq short names work too: {', '.join(QFORMAT_ALIASES)})"]
    if name in choices.KV_ONLY_QUANT_FORMATS:
        return [f"{field_name}: {name} quantizes only the KV cache. Fix: a model format plus task.kv_cache (e.g. task.kv_cache=fp8)."]
    if name in choices.MOE_ONLY_QUANT_FORMATS and cfg.model.moe is None:
        return [f"{field_name}: {name} quantizes MoE experts only and model={cfg.model.name} is dense. Fix: NVFP4_MLP_ONLY_CFG or NVFP4_DEFAULT_CFG."]
    if runs_on_cpu(cfg.backend) and name in choices.CUDA_ONLY_QUANT_FORMATS:
        return [
            f"{field_name}: {name} needs CUDA kernels (Triton / CUDA extensions in ModelOpt 0.46) and this run is on CPU. "
            f"Fix: run on a GPU (backend.device=cuda), or on CPU pick e.g. NVFP4_DEFAULT_CFG, MXFP8_DEFAULT_CFG, FP8_DEFAULT_CFG, INT4_AWQ_CFG."
        ]
    return []


def _auto_quantize_problems(cfg: DictConfig) -> List[str]:
    task, auto = cfg.task, cfg.task.auto_quantize
    problems = []
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
    problems += _search_state_problems(auto.checkpoint)
    if cfg.parallel.pipeline > 1:
        problems.append(
            f"task.auto_quantize.enabled: auto-quantize scores every layer with one forward/backward through the "
            f"whole model, which ModelOpt does not split across pipeline stages (parallel.pipeline="
            f"{cfg.parallel.pipeline}). Fix: a layout with pipeline=1 (more tensor/expert parallelism), or a fixed format."
        )
    return problems


def _search_state_problems(checkpoint: Optional[str]) -> List[str]:
    """A search state given to resume from must be whole: ModelOpt writes it in place (torch.save,
    not atomic), so a run killed while saving leaves a truncated zip that would fail late."""
    import zipfile

    if not checkpoint or not Path(checkpoint).expanduser().is_file():
        return []  # none yet: scored and saved there
    try:
        with zipfile.ZipFile(Path(checkpoint).expanduser()) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        return [f"task.auto_quantize.checkpoint: {checkpoint} is not a complete search state ({err}; a run killed "
                f"while saving it?). Fix: delete it to score the layers again, or name a complete one."]
    return []


def _megatron_problems(cfg: DictConfig) -> List[str]:
    """Options that run on the transformers model only."""
    task = cfg.task
    unsupported = [
        ("task.auto_quantize.enabled", task.auto_quantize.enabled, "false"), ("task.compress", task.compress, "false"),
        ("task.generate.prompts", bool(task.generate.prompts), "[]"),
        ("task.export_format", task.export_format != "hf", "hf"), ("data.packing", cfg.data.packing != "pack", "pack"),
    ]
    problems = [f"{f}: not available with backend=megatron (it runs on the transformers model). Fix: {f}={fix}, or backend=hf."
                for f, used, fix in unsupported if used]
    if task.export:
        problems += export_layout_problems(cfg, "parallel.tensor (task.export=true)")
    return problems


def _deploy_problems(cfg: DictConfig) -> List[str]:
    task = cfg.task
    if task.deploy != "none" and task.recipe and not task.auto_quantize.enabled:
        return [f"task.deploy: {task.deploy} is checked against named formats; a recipe's export is not known ahead. "
                f"Fix: task.deploy=none, or a task.quant_cfg."]
    auto = task.auto_quantize
    fmts = [canonical_format(f) for f in (auto.formats if auto.enabled else [task.quant_cfg])]
    return deploy_problems("task.quant_cfg" if not auto.enabled else "task.auto_quantize.formats", task.deploy, fmts,
                           task.kv_cache, task.weight_only, mixed=auto.enabled, export_format=task.export_format)


def problems(cfg: DictConfig) -> List[str]:
    task = cfg.task
    found = []
    if task.auto_quantize.enabled:
        found += _auto_quantize_problems(cfg)
    elif task.recipe:
        found += recipe_problems(task.recipe)
    else:
        found += quant_format_problems("task.quant_cfg", task.quant_cfg, cfg)
    if (p := one_of("task.kv_cache", task.kv_cache, choices.KV_CACHE_FORMATS)):
        found.append(p)
    elif runs_on_cpu(cfg.backend) and task.kv_cache == "nvfp4_rotate":
        found.append("task.kv_cache: nvfp4_rotate needs fast_hadamard_transform (CUDA) and this run is on CPU. Fix: task.kv_cache=nvfp4 or fp8.")
    if (p := one_of("task.export_format", task.export_format, choices.EXPORT_FORMATS)):
        found.append(p)
    if (p := one_of("task.export_dtype", task.export_dtype, ("bfloat16", "float16"))):
        found.append(p)
    if task.compress:
        if compute_dtype(cfg.backend, cfg.model, expected_device(cfg.backend)) == "float32":
            found.append("task.compress: compressed weights dequantize to bfloat16/float16 in ModelOpt. Fix: backend.dtype=bfloat16.")
        if runs_on_cpu(cfg.backend) and not task.auto_quantize.enabled and not task.recipe and canonical_format(task.quant_cfg).startswith(("INT4", "W4A8_AWQ")):
            found.append(
                f"task.compress: ModelOpt 0.46's packed INT4 weights do not run forward on CPU ({task.quant_cfg}). "
                f"Fix: task.compress=false (fake-quant is numerically the same), or run on a GPU."
            )
    if len(task.generate.references) > len(task.generate.prompts):
        found.append(
            f"task.generate.references: {len(task.generate.references)} references for {len(task.generate.prompts)} prompts. "
            f"Fix: one reference per prompt (the first ones), or none."
        )
    if cfg.backend.name == "megatron":
        found += _megatron_problems(cfg)
    elif task.sync_expert_weight_amax:
        # ModelOpt 0.46 shares the weight amax only across megatron-core's expert layers
        # (SequentialMLP); on a transformers MoE the flag changes nothing (measured).
        found.append("task.sync_expert_weight_amax: shares expert weight amax only on backend=megatron; on "
                     "backend=hf ModelOpt leaves every expert's amax its own. Fix: backend=megatron, or "
                     "task.sync_expert_weight_amax=false.")
    if task.export:
        found += awq_export_problems(cfg)
    found += _deploy_problems(cfg)
    origin = read_origin(cfg.run.get("load"))
    if origin is not None and origin.get("quantization"):
        found.append(
            f"run.load: {cfg.run.load} holds an already-quantized model ({origin['quantization'].get('format')}). "
            f"Fix: run.load=<a run with an unquantized model (prune, distill)> or model.checkpoint, or task=export to "
            f"re-export it."
        )
    return found + evaluate_problems(task.evaluate)


def outputs(cfg: DictConfig, quantized: bool = False) -> Tuple[str, ...]:
    task = cfg.task
    return (("saved_model",) * task.save_model + ("export",) * task.export
            + ("generations",) * bool(task.generate.prompts))


SPEC = TaskSpec(name="quantize", schema=QuantizeTaskConfig, problems=problems,
                backends=("hf", "megatron"), outputs=outputs, changes_model=True,
                sweep_axes=("effective_bits",))
