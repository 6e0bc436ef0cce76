"""task=distill: its config and checks (see optmodel/tasks/distill/run.py for the workflow)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig

from optmodel.facts.checkpoint import resolve_checkpoint
from optmodel.facts.rundir import read_origin, recorded_model_config, run_dir_problems, saved_model_path
from optmodel.tasks.finetune.spec import FinetuneTaskConfig, training_outputs, training_task_problems
from optmodel.tasks.spec import TaskSpec
from optmodel.training.config import DistillationConfig, distillation_problems


@dataclass
class DistillTaskConfig(FinetuneTaskConfig):
    name: str = "distill"
    teacher: Optional[str] = None  # checkpoint dir or run dir; None: the model before the student's pruning / quantization
    allow_quantized_teacher: bool = False  # a fake-quant teacher is refused unless stated as intended
    distillation: DistillationConfig = field(default_factory=DistillationConfig)


def teacher_source(cfg: DictConfig) -> Optional[str]:
    """task.teacher, else the model before the student was changed: the input checkpoint of the
    student's run (run.load: a prune or quantize run), or for a fresh PTQ in this run
    (task.quant_cfg) the checkpoint it loads."""
    if cfg.task.get("teacher"):
        return str(cfg.task.teacher)
    origin = read_origin(cfg.run.get("load"))
    if origin:
        return origin.get("input_checkpoint")
    if cfg.task.get("quant_cfg"):
        checkpoint = resolve_checkpoint(cfg.model)
        return str(checkpoint) if checkpoint else None
    return None


def _teacher_shape(source: str) -> Dict[str, Any]:
    """num_layers / vocab_size of the teacher from its config.json or run manifest (no weights read)."""
    origin = read_origin(source)
    if origin is not None:
        model = recorded_model_config(source) or {}
        return {"num_layers": model.get("num_layers"), "vocab_size": model.get("vocab_size"),
                "quantization": origin.get("quantization")}
    conf = json.loads((Path(source).expanduser() / "config.json").read_text())
    return {"num_layers": conf.get("num_hidden_layers"), "vocab_size": conf.get("vocab_size"), "quantization": None}


def problems(cfg: DictConfig) -> List[str]:
    task = cfg.task
    found = training_task_problems(cfg)
    source = teacher_source(cfg)
    shape: Dict[str, Any] = {}
    if source is None:
        found.append("task.teacher: distillation needs a teacher, and the student is neither from a run dir whose "
                     "manifest names the model it started from (run.load=<prune or quantize run>) nor quantized in "
                     "this run (task.quant_cfg). Fix: task.teacher=<HF checkpoint dir or optmodel run dir>.")
    elif read_origin(source) is not None:
        found += run_dir_problems(source, field="task.teacher")
        if saved_model_path(read_origin(source)) is not None:
            shape = _teacher_shape(source)
    elif not (Path(source).expanduser() / "config.json").is_file():
        found.append(f"task.teacher: {source} is neither an optmodel run dir nor a Hugging Face checkpoint dir "
                     f"(no config.json). Fix: task.teacher=<checkpoint dir or run dir>.")
    else:
        shape = _teacher_shape(source)
    if shape.get("quantization") and not task.allow_quantized_teacher:
        found.append(f"task.teacher: {source} is quantized ({shape['quantization'].get('format')}); distilling from a "
                     f"fake-quant teacher passes its quantization error on. Fix: the unquantized model, or "
                     f"task.allow_quantized_teacher=true if intended.")
    student_vocab = cfg.model.get("vocab_size")
    if shape.get("vocab_size") and student_vocab and shape["vocab_size"] != student_vocab:
        found.append(f"task.teacher: its vocabulary has {shape['vocab_size']} tokens and the student's "
                     f"{student_vocab}; logit distillation needs one tokenizer. Fix: a teacher of the same family.")
    found += distillation_problems(task.distillation, "task.distillation", cfg.model.get("num_layers"),
                                   shape.get("num_layers"))
    if cfg.backend.name == "megatron":
        found += megatron_layer_name_problems(task.distillation)
    return found


MEGATRON_MODULES = ("decoder.", "embedding", "output_layer")


def megatron_layer_name_problems(d) -> List[str]:
    """KD layers on backend=megatron are megatron-core module names (ModelOpt's Megatron plugin
    hooks them by name): `decoder.layers.<i>`, `output_layer`, not the HF `model.layers.<i>`."""
    named = [("logit_layers", name) for name in (d.logit_layers or [])]
    named += [(f"intermediate_layer_pairs[{i}]", name) for i, pair in enumerate(d.intermediate_layer_pairs)
              for name in list(pair)[:2]]
    return [f"task.distillation.{where}: {name!r} is not a megatron-core module name (backend=megatron). "
            f"Fix: decoder.layers.<i> (or output_layer for the logits)."
            for where, name in named if not str(name).startswith(MEGATRON_MODULES)]


SPEC = TaskSpec(name="distill", schema=DistillTaskConfig, problems=problems,
                backends=("hf", "megatron"), resumable=True, outputs=training_outputs, changes_model=True,
                sweep_axes=("train_steps",))
