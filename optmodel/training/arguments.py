"""transformers.TrainingArguments from a TrainingConfig."""

from __future__ import annotations

from pathlib import Path

from optmodel.training.precision import trainer_precision


def gradient_accumulation(t, data_parallel: int = 1) -> int:
    return max(1, t.global_batch_size // (t.micro_batch_size * data_parallel))


def training_arguments(t, output_dir: Path, seed: int, has_eval: bool, use_cpu: bool, data_parallel: int = 1,
                       progress_bar: bool = True, autocast=None):
    """The Trainer arguments of one run: AdamW (torch), warmup then the schedule, clipping,
    autocast to `autocast` (a half dtype; None: none — see optmodel.training.precision),
    step-based evaluation and checkpoints under `output_dir`."""
    from transformers import TrainingArguments

    schedule, schedule_kwargs = t.lr_schedule, {}
    if t.lr_schedule == "cosine" and t.min_lr_ratio > 0:
        schedule, schedule_kwargs = "cosine_with_min_lr", {"min_lr_rate": t.min_lr_ratio}
    elif t.lr_schedule == "constant":
        schedule = "constant_with_warmup"
    evaluate_in_loop = has_eval and t.eval_every > 0
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=-1 if t.num_epochs > 0 else t.max_steps,
        num_train_epochs=t.num_epochs if t.num_epochs > 0 else 1.0,
        per_device_train_batch_size=t.micro_batch_size,
        per_device_eval_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation(t, data_parallel),
        learning_rate=t.lr,
        lr_scheduler_type=schedule,
        lr_scheduler_kwargs=schedule_kwargs,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_eps,
        optim="adamw_torch",
        max_grad_norm=t.clip_grad if t.clip_grad > 0 else 0.0,
        **trainer_precision(autocast),
        seed=seed,
        data_seed=seed,
        eval_strategy="steps" if evaluate_in_loop else "no",
        eval_steps=t.eval_every if evaluate_in_loop else None,
        logging_strategy="steps",
        logging_steps=t.log_every,
        save_strategy="steps" if t.save_every > 0 else "no",
        save_steps=t.save_every if t.save_every > 0 else 500,
        save_total_limit=t.keep_checkpoints,
        save_only_model=False,  # optimizer, scheduler and RNG states too: an exact resume
        report_to="none",  # optmodel's tracker gets the metrics through MetricsCallback
        disable_tqdm=not progress_bar,
        dataloader_num_workers=t.dataloader_workers,
        use_cpu=use_cpu,
        remove_unused_columns=False,  # rows are exactly input_ids / labels / attention_mask
    )
