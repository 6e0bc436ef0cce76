"""task=finetune: its config and checks (see optmodel/tasks/finetune.py for the workflow)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from omegaconf import DictConfig

from optmodel.config.tasks.base import EvaluateConfig, TaskConfig, TaskSpec, evaluate_problems
from optmodel.rundir import read_origin
from optmodel.training.config import TrainingConfig, training_problems

MEGATRON_TRAINING_REFUSAL = (
    "training on backend=megatron (ModelOpt's Megatron distillation plugin under megatron-core's forward-backward "
    "schedule and distributed optimizer) is not wired into optmodel yet; finetune and distill train the "
    "transformers model through ModelOpt's HF trainers. Fix: backend=hf (one process or torchrun DDP)."
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


def student_is_quantized(cfg: DictConfig) -> bool:
    origin = read_origin(cfg.run.get("load"))
    return bool(origin and origin.get("quantization")) or bool(cfg.task.get("quant_cfg"))


def training_outputs(cfg: DictConfig, quantized: bool = False) -> Tuple[str, ...]:
    """saved_model, and the export when the student is (or becomes) quantized."""
    exports = cfg.task.export and (quantized or student_is_quantized(cfg))
    return ("saved_model",) + ("export",) * bool(exports)


def training_task_problems(cfg: DictConfig) -> List[str]:
    """The checks finetune and distill share."""
    from optmodel.config.tasks.quantize import quant_format_problems

    task = cfg.task
    # backend=hf under torchrun is data parallel: each rank takes micro_batch_size of the global batch
    world = cfg.run.get("world_size") or int(os.environ.get("WORLD_SIZE", "1"))
    found = training_problems(task.training, "task.training", data_parallel=world)
    if task.quant_cfg:
        found += quant_format_problems("task.quant_cfg", task.quant_cfg, cfg)
        origin = read_origin(cfg.run.get("load"))
        if origin is not None and origin.get("quantization"):
            found.append(f"task.quant_cfg: run.load={cfg.run.load} is already quantized "
                         f"({origin['quantization'].get('format')}); its quantizers are trained as they are. "
                         f"Fix: task.quant_cfg=null.")
        if task.calib_sequences < 1:
            found.append(f"task.calib_sequences: must be >= 1, got {task.calib_sequences}.")
    if cfg.run.get("resume") and not cfg.run.get("output_dir"):
        found.append("run.resume: continues the training checkpoints of an interrupted run dir, but run.output_dir "
                     "is unset (a new run dir holds none). Fix: run.output_dir=<the interrupted run dir>.")
    if cfg.backend.name == "megatron":
        found.append(f"backend: {MEGATRON_TRAINING_REFUSAL}")
    return found + evaluate_problems(task.evaluate)


SPEC = TaskSpec(name="finetune", schema=FinetuneTaskConfig, problems=training_task_problems,
                runner="optmodel.tasks.finetune", backends=("hf", "megatron"), resumable=True,
                outputs=training_outputs)
