"""`fit`: train a model with the right ModelOpt trainer, resumably, and report.

    result = fit(model, training_cfg, train_ds, eval_ds, output_dir=run_dir / "checkpoints",
                 seed=cfg.run.seed, teacher=teacher, distillation=task.distillation,
                 resume=cfg.run.resume, tracker=ctx.tracker)
    result.model        # the trained student (a DistillationModel is exported back to the student)
    result.metrics      # train_loss, train_steps, train_seconds, train_step_seconds, eval_loss, ...
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from optmodel.training.arguments import training_arguments
from optmodel.training.callbacks import MetricsCallback, PreemptionCallback, StepHook
from optmodel.training.checkpoints import CompleteMarker, discard_incomplete, last_complete_checkpoint, requeued_job
from optmodel.training.precision import master_weights, uses_cpu
from optmodel.training.threads import small_model_threads
from optmodel.training.trainers import build_trainer, trainer_kind

log = logging.getLogger("optmodel")


@dataclass
class FitResult:
    model: Any
    kind: str
    metrics: Dict[str, Any]
    history: List[Dict[str, Any]] = field(default_factory=list)
    resumed_from: Optional[Path] = None
    trainer: Any = None


class StepTimer:
    """Wall time of optimizer steps (the first one, with its warm-up, excluded)."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _Cb(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer.begin = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer.times.append(time.perf_counter() - timer.begin)

        self.begin, self.times, self.callback = 0.0, [], _Cb()

    def mean(self) -> Optional[float]:
        steady = self.times[1:] or self.times
        return sum(steady) / len(steady) if steady else None


def fit(model, training, train_dataset, eval_dataset=None, *, output_dir: Path, seed: int, teacher=None,
        distillation=None, resume: bool = False, tracker=None, use_cpu: Optional[bool] = None,
        data_parallel: Optional[int] = None, extra_callbacks: Optional[List[Any]] = None,
        on_step: Optional[Callable[[int, int], None]] = None, trainer_class=None, data_collator=None) -> FitResult:
    """Train `model` on `train_dataset` per `training` (a TrainingConfig node).

    `teacher` given: distillation per `distillation` (a DistillationConfig node); a
    fake-quantized `model` makes it QAT / QAD. Checkpoints go to `output_dir`; `resume`
    (or a requeued Slurm job) continues from its last complete checkpoint. `on_step(step,
    max_steps)` runs after every optimizer step. `trainer_class` (a transformers Trainer with a
    `kind` name) trains instead of ModelOpt's trainers, with `data_collator`: an EAGLE3 draft's,
    whose checkpoints hold the draft only.
    """
    from optmodel.training.distill import convert_to_distillation_model, export_student

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    kind = trainer_class.kind if trainer_class else trainer_kind(model, teacher, distillation)
    master = master_weights(model)  # fp32 trainable weights; compute stays in the loaded dtype (autocast)
    autocast = master.autocast_dtype(bool(training.bf16))
    if kind.endswith("_layerwise"):
        model = convert_to_distillation_model(model, teacher, distillation)
    if use_cpu is None:
        use_cpu = uses_cpu(model)
    if data_parallel is None:  # torchrun DDP (backend=hf): every rank holds the model, the batch is split
        import torch.distributed as dist

        data_parallel = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    args = training_arguments(training, output_dir, seed, eval_dataset is not None, use_cpu, data_parallel,
                              autocast=autocast)
    metrics_cb, preemption, timer = MetricsCallback(tracker), PreemptionCallback(), StepTimer()
    callbacks = [CompleteMarker(), metrics_cb, preemption, timer.callback, *(extra_callbacks or [])]
    callbacks += [StepHook(on_step)] if on_step else []
    if trainer_class:
        trainer = trainer_class(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                                data_collator=data_collator, callbacks=callbacks)
    else:
        trainer = build_trainer(kind, model, args, train_dataset, eval_dataset, teacher, distillation, callbacks)

    resume_from = None
    if resume or requeued_job():
        discard_incomplete(output_dir)
        resume_from = last_complete_checkpoint(output_dir)
        if resume_from:
            log.info("resuming %s training from %s", kind, resume_from)
        else:
            log.info("resume requested but %s holds no complete checkpoint: training from the start", output_dir)
    length = f"{training.num_epochs} epochs" if training.num_epochs > 0 else f"{training.max_steps} steps"
    log.info("training (%s): %s of %d sequences, lr %g, compute %s, fp32 master weights", kind, length,
             training.global_batch_size, training.lr, str(autocast or "torch.float32").replace("torch.", ""))
    start = time.perf_counter()
    model.train()
    try:
        with preemption.guard(trainer), small_model_threads(model):
            output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        master.restore()  # the trained weights in the compute dtype, rounded once
    seconds = time.perf_counter() - start
    metrics: Dict[str, Any] = {
        "train_kind": kind,
        "train_steps": trainer.state.global_step,
        "train_loss": round(float(output.training_loss), 6),
        "train_seconds": round(seconds, 3),
        "train_step_seconds": round(timer.mean(), 6) if timer.mean() else None,
        "train_resumed_from_step": int(resume_from.name.split("-")[1]) if resume_from else 0,
        "train_compute_dtype": str(autocast or "torch.float32").replace("torch.", ""),
    }
    if eval_dataset is not None:
        final = trainer.evaluate()
        from optmodel.training.callbacks import perplexity_of_loss

        metrics["eval_loss"] = round(float(final["eval_loss"]), 6)
        lm_loss = final.get("eval_ce_loss", final["eval_loss"])
        metrics["eval_lm_loss"] = round(float(lm_loss), 6)
        metrics["eval_perplexity"] = round(perplexity_of_loss(float(lm_loss)), 6)
    trained = export_student(trainer.model)
    trained.eval()
    return FitResult(model=trained, kind=kind, metrics=metrics, history=metrics_cb.history,
                     resumed_from=resume_from, trainer=trainer)
