"""Training settings shared by every training task (finetune, distill, eagle3): dataclass
schemas embedded in a task's schema, and their cross-field checks. Imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

LR_SCHEDULES = ("cosine", "linear", "constant")
INTERMEDIATE_LOSSES = ("cosine", "mse")


@dataclass
class TrainingConfig:
    """Optimizer, schedule, batch, evaluation and checkpoint settings of one training run
    (transformers' Trainer: AdamW, warmup then cosine, clipping, fp32 master weights with compute
    in the model's dtype: optmodel/training/precision.py)."""

    max_steps: int = 100  # optimizer steps; ignored when num_epochs > 0
    num_epochs: float = 0.0  # > 0: train this many passes over the data instead of max_steps
    micro_batch_size: int = 4  # sequences per forward / backward on one process
    global_batch_size: int = 16  # sequences per optimizer step over all data-parallel ranks (gradient accumulation)
    lr: float = 1e-4
    min_lr_ratio: float = 0.0  # cosine floor as a share of lr
    lr_schedule: str = "cosine"  # cosine | linear | constant (each after warmup)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: float = 1.0  # max gradient norm; 0 = no clipping
    bf16: bool = False  # hf: bf16 autocast of a float32 model (a bf16 / fp16 one computes in its dtype anyway; weights train in fp32)
    eval_every: int = 0  # held-out loss / perplexity every N steps; 0 = at the end only
    eval_max_sequences: int = 0  # 0: data.eval_max_sequences
    log_every: int = 10
    save_every: int = 0  # a resumable checkpoint every N steps; 0 = none (only the final model)
    keep_checkpoints: int = 2  # newest resumable checkpoints kept
    packing: str = "pack"  # pack | pad (see optmodel.data.sft)
    max_train_sequences: int = 0  # cap on training rows; 0 = all the data gives
    dataloader_workers: int = 0


@dataclass
class DistillationConfig:
    """Knowledge-distillation losses, mirroring the Megatron-LM KD YAML (`--export-kd-cfg`)."""

    logit_layers: Optional[List[str]] = None  # [student, teacher] output layer; None: the model's (hf: lm_head)
    intermediate_layer_pairs: List[List[str]] = field(default_factory=list)  # [student, teacher(, cosine|mse)]
    skip_lm_loss: bool = True  # train on the KD loss alone; false: LM loss + kd_loss_scale x (balanced) KD loss
    kd_loss_scale: float = 1.0
    logit_kl_temperature: float = 1.0


def _positive(problems: List[str], prefix: str, name: str, value, allow_zero: bool = False) -> None:
    if value is None or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        problems.append(f"{prefix}.{name}: must be {bound}, got {value}. Fix: {prefix}.{name}=<a number {bound}>.")


def training_problems(t, prefix: str, data_parallel: int = 1) -> List[str]:
    """Problems of a TrainingConfig node at config path `prefix` (e.g. 'task.training')."""
    problems: List[str] = []
    if (t.max_steps is None or t.max_steps <= 0) and not (t.num_epochs and t.num_epochs > 0):
        problems.append(f"{prefix}.max_steps: training needs steps > 0 (got max_steps={t.max_steps}, "
                        f"num_epochs={t.num_epochs}). Fix: {prefix}.max_steps=100 or {prefix}.num_epochs=1.")
    for name in ("micro_batch_size", "global_batch_size", "lr", "log_every"):
        _positive(problems, prefix, name, t[name])
    for name in ("warmup_steps", "weight_decay", "clip_grad", "eval_every", "save_every", "num_epochs",
                 "eval_max_sequences", "max_train_sequences", "dataloader_workers"):
        _positive(problems, prefix, name, t[name], allow_zero=True)
    if t.keep_checkpoints is None or t.keep_checkpoints < 1:
        problems.append(f"{prefix}.keep_checkpoints: must be >= 1 so a resume has a checkpoint. "
                        f"Fix: {prefix}.keep_checkpoints=2.")
    if not 0 <= (t.min_lr_ratio or 0) <= 1:
        problems.append(f"{prefix}.min_lr_ratio: a share of lr in [0, 1], got {t.min_lr_ratio}.")
    if t.lr_schedule not in LR_SCHEDULES:
        problems.append(f"{prefix}.lr_schedule: unknown value {t.lr_schedule!r}. Valid: {', '.join(LR_SCHEDULES)}.")
    if t.packing not in ("pack", "pad"):
        problems.append(f"{prefix}.packing: unknown value {t.packing!r}. Valid: pack, pad.")
    micro, glob = t.micro_batch_size or 0, t.global_batch_size or 0
    if micro > 0 and glob > 0 and glob % (micro * data_parallel):
        problems.append(
            f"{prefix}.global_batch_size: {glob} is not a multiple of micro_batch_size x data-parallel ranks = "
            f"{micro} x {data_parallel}; the gradient-accumulation count must be whole. "
            f"Fix: {prefix}.global_batch_size={max(1, glob // (micro * data_parallel)) * micro * data_parallel}."
        )
    return problems


def distillation_problems(d, prefix: str, student_layers: Optional[int] = None,
                          teacher_layers: Optional[int] = None) -> List[str]:
    """Problems of a DistillationConfig node; with layer counts, the layer pairs are checked
    against the models (HF names `model.layers.<i>...`)."""
    problems: List[str] = []
    if d.logit_layers is not None and len(d.logit_layers) != 2:
        problems.append(f"{prefix}.logit_layers: [student_layer, teacher_layer], got {list(d.logit_layers)}.")
    if d.kd_loss_scale is None or d.kd_loss_scale <= 0:
        problems.append(f"{prefix}.kd_loss_scale: must be > 0, got {d.kd_loss_scale}.")
    if d.logit_kl_temperature is None or d.logit_kl_temperature <= 0:
        problems.append(f"{prefix}.logit_kl_temperature: must be > 0, got {d.logit_kl_temperature}.")
    for i, pair in enumerate(d.intermediate_layer_pairs):
        where = f"{prefix}.intermediate_layer_pairs[{i}]"
        if len(pair) not in (2, 3):
            problems.append(f"{where}: [student_layer, teacher_layer] or [student, teacher, cosine|mse], got {list(pair)}.")
            continue
        if len(pair) == 3 and pair[2] not in INTERMEDIATE_LOSSES:
            problems.append(f"{where}: unknown loss {pair[2]!r}. Valid: {', '.join(INTERMEDIATE_LOSSES)}.")
        for side, name, layers in (("student", pair[0], student_layers), ("teacher", pair[1], teacher_layers)):
            index = layer_index(name)
            if layers is not None and index is not None and index >= layers:
                problems.append(f"{where}: the {side} has {layers} layers, so {name!r} (layer {index}) does not exist. "
                                f"Fix: a layer index below {layers}.")
    return problems


def layer_index(name: str) -> Optional[int]:
    """The decoder-layer index in a module name like 'model.layers.3' or 'decoder.layers.3.mlp'."""
    parts = str(name).split(".")
    for before, part in zip(parts, parts[1:]):
        if before == "layers" and part.isdigit():
            return int(part)
    return None
