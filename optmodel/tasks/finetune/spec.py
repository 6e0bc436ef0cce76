"""task=finetune: its config and checks (see optmodel/tasks/finetune/run.py for the workflow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from omegaconf import DictConfig

from optmodel.config.gate import GateConfig
from optmodel.facts.layout import dense_group_size, launched_world_size
from optmodel.facts.rundir import read_origin
from optmodel.tasks.quantize.spec import quant_format_problems
from optmodel.tasks.spec import EvaluateConfig, TaskConfig, TaskSpec, evaluate_problems
from optmodel.training.config import TrainingConfig, training_problems

MEGATRON_AUTOCAST_REFUSAL = (
    "task.training.bf16: bf16 autocast is backend=hf's; backend=megatron trains in its weights' dtype (bf16 weights "
    "with megatron-core's fp32 main copy, on CUDA). Fix: task.training.bf16=false and backend.dtype=bfloat16."
)


@dataclass
class FinetuneTaskConfig(TaskConfig):
    name: str = "finetune"
    training: TrainingConfig = field(default_factory=TrainingConfig)
    quant_cfg: Optional[str] = None  # QAT from a fresh PTQ in this ModelOpt format (calibrated on the training data)
    calib_sequences: int = 32  # quant_cfg: training sequences used to calibrate
    perplexity: bool = True  # held-out perplexity before and after
    export: bool = True  # quantized student: also the unified HF export (hf_quant_config.json)
    export_dtype: str = "bfloat16"
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    gate: GateConfig = field(default_factory=GateConfig)  # accuracy budget against the base this run measures


def student_is_quantized(cfg: DictConfig) -> bool:
    origin = read_origin(cfg.run.get("load"))
    return bool(origin and origin.get("quantization")) or bool(cfg.task.get("quant_cfg"))


def training_outputs(cfg: DictConfig, quantized: bool = False) -> Tuple[str, ...]:
    """saved_model, and the export when the student is (or becomes) quantized."""
    exports = cfg.task.export and (quantized or student_is_quantized(cfg))
    return ("saved_model",) + ("export",) * bool(exports)


def training_stack_problems(cfg: DictConfig) -> List[str]:
    """The checks of task.training every training task shares (finetune, distill, eagle3)."""
    task = cfg.task
    # every data-parallel rank takes micro_batch_size of the global batch (backend=hf under torchrun:
    # every rank; megatron: the ranks the model-parallel layout leaves)
    data_parallel = max(1, launched_world_size(cfg))
    megatron = cfg.backend.name == "megatron"
    if megatron:
        data_parallel = max(1, data_parallel // dense_group_size(cfg.parallel))
    found = training_problems(task.training, "task.training", data_parallel=data_parallel)
    if cfg.run.get("resume") and not cfg.run.get("output_dir"):
        found.append("run.resume: continues the training checkpoints of an interrupted run dir, but run.output_dir "
                     "is unset (a new run dir holds none). Fix: run.output_dir=<the interrupted run dir>.")
    if megatron and task.training.bf16:
        found.append(MEGATRON_AUTOCAST_REFUSAL)
    return found


def training_task_problems(cfg: DictConfig) -> List[str]:
    """The checks finetune and distill share."""
    task = cfg.task
    found = training_stack_problems(cfg)
    if task.quant_cfg:
        found += quant_format_problems("task.quant_cfg", task.quant_cfg, cfg)
        origin = read_origin(cfg.run.get("load"))
        if origin is not None and origin.get("quantization"):
            found.append(f"task.quant_cfg: run.load={cfg.run.load} is already quantized "
                         f"({origin['quantization'].get('format')}); its quantizers are trained as they are. "
                         f"Fix: task.quant_cfg=null.")
        if task.calib_sequences < 1:
            found.append(f"task.calib_sequences: must be >= 1, got {task.calib_sequences}.")
    return found + evaluate_problems(task.evaluate)


SPEC = TaskSpec(name="finetune", schema=FinetuneTaskConfig, problems=training_task_problems, backends=("hf", "megatron"), resumable=True,
                outputs=training_outputs, changes_model=True,
                sweep_axes=("train_steps",))
