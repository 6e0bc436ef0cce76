"""`fit_megatron`: SFT / QAT / KD / QAD of a MegatronHandle's model on megatron-core's own
training pieces, at the handle's TP / PP / EP layout.

    step: get_forward_backward_func() schedule over the micro-batches of one global batch
          (the 1F1B pipeline at PP > 1, with ModelOpt's tensor-shape adjustment for KD)
          -> finalize_model_grads (DP / embedding / layernorm grad reductions, megatron DDP)
          -> the megatron optimizer (clipping inside) -> OptimizerParamScheduler (warmup, decay)

The model is wrapped in megatron-core's DistributedDataParallel and optimized by
`get_megatron_optimizer`. On CUDA that is the distributed optimizer (optimizer state sharded
over data-parallel ranks) and, for bf16 weights, its fp32 main copy. On CPU it is
megatron-core's FP32Optimizer over torch AdamW, or for bf16 weights its
Float16OptimizerWithFloat16Params (fp32 main copy, stepped, then rounded into the bf16
weights); optmodel.backends.megatron_cpu adapts both (_patch_fp32_optimizer, cuda_type_names).
The distributed optimizer refuses CPU tensors by type name and stays CUDA-only.

Checkpoints every save_every steps: `<output_dir>/checkpoint-<step>` holding megatron's
distributed checkpoint of model + optimizer + scheduler state, written under a partial
name (optmodel.manifest.atomic_dir), renamed when every rank is done, then marked complete (optmodel.training.checkpoints);
`resume` continues from the newest complete one (same seed: the same data order).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from tqdm import tqdm

from optmodel.backends.megatron_cpu import cuda_type_names
from optmodel.distributed import barrier, broadcast_from_rank0, is_rank0
from optmodel.manifest import atomic_dir, atomic_write_text
from optmodel.training.checkpoints import (COMPLETE_MARKER, checkpoints, discard_incomplete, is_complete,
                                           last_complete_checkpoint, requeued_job)
from optmodel.training.loop import FitResult
from optmodel.training.megatron_kd import distillation_model, forward_step
from optmodel.training.trainers import is_quantized

log = logging.getLogger("optmodel")

SFT_FIELDS = ("input_ids", "labels", "attention_mask")
DECAY_STYLES = {"cosine": "cosine", "linear": "linear", "constant": "constant"}


def fit_megatron(handle, training, train_dataset, eval_dataset=None, *, output_dir: Path, seed: int, teacher=None,
                 distillation=None, resume: bool = False, tracker=None, forward_step_fn=None, kind: Optional[str] = None,
                 on_step=None) -> FitResult:
    """Train `handle.model` (this rank's stage) per `training` (a TrainingConfig node); with
    `teacher` (a MegatronHandle at the same layout), distillation per `distillation`.
    `forward_step_fn` replaces the SFT / KD micro-batch step (EAGLE3: ModelOpt's draft loss over
    the dataset's `fields`), `kind` names the run, `on_step(step, steps)` runs after each step.
    `resume` (or a requeued Slurm job): continue from the newest complete checkpoint in
    `output_dir` — weights, optimizer, scheduler, and the data order from that step on."""
    import torch
    from megatron.core import parallel_state
    from megatron.core.distributed import finalize_model_grads
    from modelopt.torch.distill.plugins.megatron import get_tensor_shapes_adjust_fn_for_distillation

    torch.manual_seed(seed)
    model = handle.model
    kind = kind or (("qad" if is_quantized(model) else "kd") if teacher is not None
                    else ("qat" if is_quantized(model) else "sft"))
    if teacher is not None:
        model = distillation_model(model, teacher.model, distillation)
    steps = total_steps(training, len(train_dataset), int(training.global_batch_size))
    ddp, optimizer, scheduler = build_optimizer(model, training, handle.device, steps)
    config = model.config
    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss

    dp = parallel_state.get_data_parallel_world_size()
    micro = int(training.micro_batch_size)
    num_microbatches = max(1, int(training.global_batch_size) // (micro * dp))
    seq = int(train_dataset.input_ids.shape[1])
    batches = microbatches(train_dataset, micro, seed)
    adjust = get_tensor_shapes_adjust_fn_for_distillation(
        [ddp], seq_length=seq, micro_batch_size=micro, decoder_seq_length=seq) if teacher is not None else None
    schedule = _schedule(forward_step_fn or forward_step(handle.device), seq, micro, adjust)

    history: List[Dict[str, Any]] = []
    times: List[float] = []
    output_dir = Path(output_dir)
    resumed_from = newest_checkpoint(output_dir) if resume or requeued_job() else None
    first = 1
    if resumed_from is not None:
        first = load_checkpoint(ddp, optimizer, scheduler, resumed_from) + 1
        for _ in range(num_microbatches * (first - 1)):  # the micro-batches the finished steps took
            next(batches)
        log.info("resuming %s training from %s (step %d of %d)", kind, resumed_from, first, steps)
    log.info("training (%s, megatron): %d steps of %d sequences (%d micro-batches of %d per DP rank), lr %g",
             kind, steps, training.global_batch_size, num_microbatches, micro, training.lr)
    start = time.perf_counter()
    ddp.train()
    last: Dict[str, float] = {}
    for step in tqdm(range(first, steps + 1), desc=f"train ({kind})", unit="step", disable=not is_rank0(),
                     initial=first - 1, total=steps):
        began = time.perf_counter()
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        reports = schedule([ddp], itertools.islice(batches, num_microbatches), num_microbatches, False)
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
        updated, grad_norm, _ = optimizer.step()
        if updated:
            scheduler.step(increment=1)
        times.append(time.perf_counter() - began)
        last = mean_report(reports, handle.device)
        if step % int(training.log_every) == 0 or step == steps:
            row = {"step": step, "loss": last.get("kd_loss", last.get("lm_loss")), "grad_norm": grad_norm,
                   "learning_rate": lr, **last}
            history.append(row)
            if tracker is not None and is_rank0():
                tracker.log({f"train/{k}": v for k, v in row.items() if k != "step" and v is not None})
        if eval_dataset is not None and training.eval_every and step % int(training.eval_every) == 0:
            history.append({"step": step, **evaluate(ddp, schedule, eval_dataset, micro, tracker, handle.device)})
            ddp.train()
        if training.save_every and step % int(training.save_every) == 0:
            save_checkpoint(ddp, optimizer, scheduler, output_dir, step, int(training.keep_checkpoints))
        if on_step is not None:
            on_step(step, steps)
    seconds = time.perf_counter() - start

    metrics: Dict[str, Any] = {
        "train_kind": kind,
        "train_steps": steps,
        "train_loss": round(float(last.get("kd_loss", last.get("lm_loss", float("nan")))), 6),
        "train_seconds": round(seconds, 3),
        "train_step_seconds": round(sum(times[1:] or times) / len(times[1:] or times), 6) if times else None,
        "train_resumed_from_step": first - 1,
        "train_first_loss": history[0]["loss"] if history else None,
    }
    if eval_dataset is not None:
        final = evaluate(ddp, schedule, eval_dataset, micro, None, handle.device)
        metrics.update(eval_loss=final["eval_loss"], eval_lm_loss=final["eval_loss"],
                       eval_perplexity=final["eval_perplexity"])
    trained = student_of(model)
    trained.eval()
    handle.model = trained
    return FitResult(model=trained, kind=kind, metrics=metrics, history=history, resumed_from=resumed_from)


def build_optimizer(model, training, device, steps: int):
    """megatron-core DDP wrapper, megatron optimizer and LR / weight-decay scheduler."""
    import torch
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    on_cuda = device.type == "cuda"
    bf16 = any(p.dtype == torch.bfloat16 for p in model.parameters())
    if bf16 and not on_cuda:
        # the local spec's norms are float32 on CPU (TE's are bf16 on a GPU); the bf16 optimizer
        # checkpoints only its bf16 groups, so the trainable norms join them (fp32 main copies)
        for param in model.parameters():
            if param.requires_grad and param.dtype == torch.float32:
                param.data = param.data.to(torch.bfloat16)
    ddp = DistributedDataParallel(
        config=model.config, module=model,
        ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True, use_distributed_optimizer=on_cuda))
    opt_config = OptimizerConfig(
        optimizer="adam", lr=float(training.lr), min_lr=float(training.lr) * float(training.min_lr_ratio),
        weight_decay=float(training.weight_decay), adam_beta1=float(training.adam_beta1),
        adam_beta2=float(training.adam_beta2), adam_eps=float(training.adam_eps),
        clip_grad=float(training.clip_grad), bf16=bf16, params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=on_cuda)
    # the CPU world has no gloo side groups (optmodel.distributed: its main groups are gloo)
    # bf16 weights: Float16OptimizerWithFloat16Params keeps the fp32 main copy the optimizer
    # steps (master weights) and copies it back rounded to bf16 after each step
    with cuda_type_names(model.parameters() if bf16 and not on_cuda else []):
        optimizer = get_megatron_optimizer(opt_config, [ddp], use_gloo_process_groups=False)
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=float(training.lr), min_lr=opt_config.min_lr,
        lr_warmup_steps=int(training.warmup_steps), lr_decay_steps=max(steps, int(training.warmup_steps) + 1),
        lr_decay_style=DECAY_STYLES[training.lr_schedule], start_wd=float(training.weight_decay),
        end_wd=float(training.weight_decay), wd_incr_steps=steps, wd_incr_style="constant")
    return ddp, optimizer, scheduler


def total_steps(training, rows: int, global_batch: int) -> int:
    if training.num_epochs and training.num_epochs > 0:
        return max(1, math.ceil(training.num_epochs * rows / global_batch))
    return int(training.max_steps)


def microbatches(dataset, micro: int, seed: int):
    """Endless micro-batches of this data-parallel rank: each epoch a seeded permutation,
    dealt round-robin over the DP ranks (every rank of a model replica gets the same rows)."""
    import torch
    from megatron.core import parallel_state

    dp, rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    for epoch in itertools.count():
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + epoch))
        usable = len(order) // (micro * dp) * micro * dp
        if usable == 0:
            raise ValueError(f"{len(dataset)} training rows make no micro-batch of {micro} per data-parallel rank "
                             f"({dp} ranks). Fix: more data or a smaller task.training.micro_batch_size.")
        for start in range(rank * micro, usable, micro * dp):
            rows = order[start:start + micro]
            yield {k: getattr(dataset, k)[rows] for k in getattr(dataset, "fields", SFT_FIELDS)}


def _schedule(step_fn, seq: int, micro: int, adjust):
    from megatron.core.pipeline_parallel import get_forward_backward_func

    def run(model, data, num_microbatches: int, forward_only: bool):
        return get_forward_backward_func()(
            forward_step_func=step_fn, data_iterator=data, model=model, num_microbatches=num_microbatches,
            seq_length=seq, micro_batch_size=micro, decoder_seq_length=seq, forward_only=forward_only,
            adjust_tensor_shapes_fn=adjust)

    return run


def mean_report(reports, device) -> Dict[str, float]:
    """Per-token means of the micro-batch reports, on every rank (the schedule returns them
    on the last pipeline stage only); `device`: where the collectives run (NCCL: CUDA)."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state

    names = ("lm_loss", "kd_loss", "logits_loss", "intermediate_loss")
    values = torch.zeros(len(names) + 1, dtype=torch.float64, device=device)
    if parallel_state.is_pipeline_last_stage() and reports:
        for r in reports:
            for i, name in enumerate(names):
                if name in r:
                    values[i] += float(r[name])
        values[-1] = len(reports)
    present = [name in (reports[0] if reports and isinstance(reports[0], dict) else {}) for name in names]
    flags = torch.tensor(present, dtype=torch.float64, device=device)
    last = parallel_state.get_pipeline_model_parallel_last_rank()
    group = parallel_state.get_pipeline_model_parallel_group()
    dist.broadcast(values, src=last, group=group)
    dist.broadcast(flags, src=last, group=group)
    dist.all_reduce(values, group=parallel_state.get_data_parallel_group())
    count = max(float(values[-1]), 1.0)
    return {name: round(float(values[i]) / count, 6) for i, name in enumerate(names) if flags[i] > 0}


def evaluate(ddp, schedule, dataset, micro: int, tracker, device) -> Dict[str, float]:
    """Held-out LM loss of the student (per target token) and its perplexity."""
    import torch

    from optmodel.training.callbacks import perplexity_of_loss

    ddp.eval()
    rows = len(dataset) // micro * micro
    data = [{k: getattr(dataset, k)[s:s + micro] for k in ("input_ids", "labels", "attention_mask")}
            for s in range(0, rows, micro)]
    if not data:
        return {}
    with torch.no_grad():
        reports = schedule([ddp], iter(data), len(data), True)
    loss = mean_report(reports, device).get("lm_loss", float("nan"))
    out = {"eval_loss": round(loss, 6), "eval_perplexity": round(perplexity_of_loss(loss), 6)}
    if tracker is not None and is_rank0():
        tracker.log({f"train/{k}": v for k, v in out.items()})
    return out


def student_of(model):
    """The plain student stage of a DistillationModel (teacher and hooks removed)."""
    import modelopt.torch.distill as mtd
    from modelopt.torch.distill import DistillationModel

    if not isinstance(model, DistillationModel):
        return model
    student = mtd.export(model)
    # adjust_distillation_model_for_mcore bound these on the instance; the plain student uses its class's
    for name in ("forward", "sharded_state_dict", "compute_language_model_loss", "set_input_tensor",
                 "set_student_input_tensor_shape", "_lm_loss_call_count", "_tensor_split_idx"):
        student.__dict__.pop(name, None)
    return student


def save_checkpoint(ddp, optimizer, scheduler, folder: Path, step: int, keep: int) -> Path:
    """checkpoint-<step>: megatron distributed checkpoint of model, optimizer and scheduler,
    complete only once renamed and marked; older complete ones beyond `keep` removed."""
    from megatron.core import dist_checkpointing

    final = Path(folder) / f"checkpoint-{step}"
    model_state = ddp.module.sharded_state_dict()  # the student alone, keyed as a saved model
    state = {"model": model_state, "optimizer": optimizer.sharded_state_dict(model_state),
             "scheduler": scheduler.state_dict(), "step": step}
    with atomic_dir(final, all_ranks=True) as partial:
        dist_checkpointing.save(state, str(partial))
    if is_rank0():
        atomic_write_text(final / COMPLETE_MARKER, f"{step}\n")
        for old in [p for p in checkpoints(folder) if is_complete(p)][:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def newest_checkpoint(folder: Path) -> Optional[Path]:
    """The newest complete checkpoint (rank 0 removes half-written ones first), the same on every rank."""
    if is_rank0():
        discard_incomplete(folder)
        for stale in Path(folder).glob(".checkpoint-*.partial-*"):  # a save killed before its rename
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    found = broadcast_from_rank0(str(last_complete_checkpoint(folder) or "") if is_rank0() else None)
    if not found:
        log.info("resume requested but %s holds no complete checkpoint: training from the start", folder)
    return Path(found) if found else None


def load_checkpoint(ddp, optimizer, scheduler, path: Path) -> int:
    """Restore a `save_checkpoint` into the freshly built training state; returns its step."""
    from megatron.core import dist_checkpointing
    model_state = ddp.module.sharded_state_dict()  # the student alone, keyed as a saved model
    loaded = dist_checkpointing.load(
        {"model": model_state, "optimizer": optimizer.sharded_state_dict(model_state, is_loading=True)}, str(path))
    ddp.module.load_state_dict(loaded["model"])  # a DistillationModel loads a student-only state as such
    optimizer.load_state_dict(loaded["optimizer"])
    scheduler.load_state_dict(loaded["scheduler"])
    return int(loaded["step"])
