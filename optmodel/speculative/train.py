"""transformers Trainer glue for EAGLE3 draft training (as ModelOpt's own EAGLE example).

The draft trains on fp32 master weights computed in the target's dtype (the shared training
layer's optmodel/training/precision.py). Checkpoints are the shared training layer's
(optmodel/training/checkpoints.py: marked complete only once the Trainer finished writing
them) and hold the draft only (optmodel/speculative/checkpoint.py). TrainingArguments from the
task config (warmup, then lr cosine to a floor / linear / constant, clip 1.0, no weight decay,
Adam betas 0.9 / 0.95, periodic checkpoints, resume) and a callback after every step
(acceptance length every N steps)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, List, Optional

from optmodel.speculative.checkpoint import trainer_class
from optmodel.speculative.data import collate
from optmodel.training.checkpoints import (CHECKPOINTS_DIR as CHECKPOINTS, CompleteMarker, discard_incomplete, last_complete_checkpoint)
from optmodel.training.precision import master_weights, trainer_precision, uses_cpu
from optmodel.training.threads import small_model_threads

log = logging.getLogger("optmodel")


def training_arguments(task, out_dir: Path, seed: int, use_cpu: bool = True, autocast=None):
    """`autocast`: the compute dtype when the draft's fp32 master weights compute in half
    precision (optmodel.training.precision)."""
    from transformers import TrainingArguments

    schedule = {"cosine": ("cosine_with_min_lr", {"min_lr": float(task.min_lr)}),
                "linear": ("linear", {}), "constant": ("constant_with_warmup", {})}[task.lr_schedule]
    return TrainingArguments(
        output_dir=str(out_dir),
        max_steps=int(task.max_steps),
        per_device_train_batch_size=int(task.batch_size),
        gradient_accumulation_steps=int(task.grad_accum),
        learning_rate=float(task.lr),
        lr_scheduler_type=schedule[0],
        lr_scheduler_kwargs=schedule[1],
        warmup_steps=int(task.warmup_steps),
        max_grad_norm=1.0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.95,
        save_strategy="steps",
        save_steps=int(task.save_steps),
        save_total_limit=2,
        logging_steps=int(task.log_steps),
        report_to=[],  # the run's Tracker logs (wandb when logger=wandb)
        use_cpu=use_cpu,
        **trainer_precision(autocast),
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,  # loss_mask and base_model_outputs reach ModelOpt's forward
        disable_tqdm=False,
    )


def last_checkpoint(out_dir: Path) -> Optional[str]:
    """The newest checkpoint the Trainer finished writing (the shared training layer's marker);
    half-written ones a kill left are removed."""
    discard_incomplete(Path(out_dir))
    found = last_complete_checkpoint(Path(out_dir))
    return str(found) if found else None


def step_callback(on_step: Callable[[int, int], None]):
    """A TrainerCallback calling on_step(step, max_steps) after every optimizer step."""
    from transformers import TrainerCallback

    class StepCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            on_step(state.global_step, state.max_steps)

    return StepCallback()


def metrics_callback(log_fn: Callable[[dict], None]):
    """Forward the Trainer's logs (loss, lr, train accuracies) to the run's tracker."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                log_fn({"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})

    return MetricsCallback()


def train(model, dataset, task, out_dir: Path, seed: int, callbacks: List, resume: bool = True,
          target: Optional[dict] = None):
    """Trainer.train from the newest checkpoint in `out_dir` when `resume`; the draft's weights
    are float32 during training, computed in the target's dtype (optmodel.training.precision).
    Checkpoints hold the draft only, `target` (checkpoint.target_identity) names the frozen target."""
    master = master_weights(model)  # the trainable draft; the frozen target stays as loaded
    args = training_arguments(task, out_dir, seed, uses_cpu(model), master.autocast_dtype())
    marker = CompleteMarker()
    trainer = trainer_class()(model=model, args=args, train_dataset=dataset, data_collator=collate,
                              callbacks=[*callbacks, marker])
    trainer.target = target
    ckpt = last_checkpoint(Path(args.output_dir)) if resume else None
    if ckpt:
        log.info("resuming EAGLE3 training from %s", ckpt)
    try:
        with small_model_threads(model):
            result = trainer.train(resume_from_checkpoint=ckpt)
        master.restore()
    except BaseException as err:
        # SIGTERM (optmodel.run.Terminated) mid-training: checkpoint where it stopped, so a
        # rerun in the same run dir resumes from there instead of the last save_steps.
        if type(err).__name__ == "Terminated" and trainer.state.global_step > 0:
            log.warning("terminated at step %d: saving a checkpoint to resume from", trainer.state.global_step)
            trainer._save_checkpoint(trainer.model, trial=None)
            marker.on_save(trainer.args, trainer.state, trainer.control)  # written whole: resumable
        master.restore()
        raise
    return trainer, result
