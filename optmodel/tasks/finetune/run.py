"""task=finetune: supervised fine-tuning of the run's model; QAT when it is quantized.

    data -> student (-> PTQ with task.quant_cfg) -> before -> train -> after -> outputs

The student is the run's model (run.load=<run dir>, e.g. a quantize run, or the checkpoint).
Training is the handle's (`handle.train`): on backend=hf transformers' Trainer through
ModelOpt's trainers (optmodel.training.loop.fit: ModelOptHFTrainer for SFT, QATTrainer for a
fake-quant student); on backend=megatron megatron-core's forward-backward schedule, DDP and
optimizer (optmodel.training.megatron). Checkpoints every
task.training.save_every steps into <run dir>/checkpoints resume with run.resume=true (or
a requeued Slurm job). Outputs: the trained model restorable by run.load (quantizer state
included) and, for a quantized one, the unified HF export. task=distill runs the same
workflow with a teacher.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from optmodel.data.sft import build_sft_dataset
from optmodel.data.text import dataset_texts, pack
from optmodel.distributed import is_rank0
from optmodel.evaluation import evaluate_handle
from optmodel.evaluation.perplexity import handle_perplexity
from optmodel.quantization import cpu_fakequant, formats
from optmodel.quantization.summary import quantizer_summary
from optmodel.training.checkpoints import CHECKPOINTS_DIR
from optmodel.training.recovery import recovered
from optmodel.training.teacher_kl import handle_kl
from optmodel.training.trainers import is_quantized

log = logging.getLogger("optmodel")


def quantize_student(handle, task, records, data) -> Dict[str, Any]:
    """PTQ of the student in task.quant_cfg, calibrated on training text (QAT / QAD from scratch)."""
    import modelopt.torch.quantization as mtq

    mtq_cfg = cpu_fakequant.for_device(formats.named_config(task.quant_cfg), handle.device)
    windows = pack(handle.tokenizer, records, data.seq_len, task.calib_sequences, "data.calib_path")
    batches = [{"input_ids": windows[s:s + data.batch_size]} for s in range(0, len(windows), data.batch_size)]
    handle.model = mtq.quantize(handle.model, mtq_cfg, handle.forward_loop(batches))
    return {"format": task.quant_cfg, "algorithm": mtq_cfg.get("algorithm", "max"), "calib_sequences": len(windows)}


def train_task(ctx, teacher_source: Optional[str] = None, task_name: str = "finetune") -> Dict[str, Any]:
    cfg, task, data = ctx.cfg, ctx.cfg.task, ctx.cfg.data
    training = task.training

    # data: problems surface before the model loads
    train_records, eval_records = dataset_texts(data, "calib"), dataset_texts(data, "eval")
    handle = ctx.load_model()
    teacher = ctx.load_model(source=teacher_source) if teacher_source else None
    if teacher_source:
        ctx.record(teacher=str(teacher_source))  # what the student learned from, failed runs included
    tok = handle.tokenizer
    train = build_sft_dataset(tok, train_records, data.seq_len, training.packing, training.max_train_sequences,
                              "data.calib_path")
    held = build_sft_dataset(tok, eval_records, data.seq_len, training.packing,
                             training.eval_max_sequences or data.eval_max_sequences, "data.eval_path")
    metrics: Dict[str, Any] = {**train.stats.as_metrics("sft_train"), **held.stats.as_metrics("sft_eval")}
    for name, ds in (("training", train), ("held-out", held)):
        if ds.stats.truncated_chats:
            log.warning("%d of %d %s chats have assistant tokens beyond data.seq_len=%d (cut off with packing=pad, "
                        "split across rows with pack)", ds.stats.truncated_chats, ds.stats.chat_records, name, data.seq_len)

    # student: a fresh PTQ when asked (QAT / QAD); a quantized run.load trains its quantizers as they are
    quantization = dict((handle.origin or {}).get("quantization") or {})
    if task.quant_cfg:
        quantization = quantize_student(handle, task, train_records, data)

    # before
    heldout = pack(tok, eval_records, data.seq_len, data.eval_max_sequences, "data.eval_path") if task.perplexity else None
    if heldout is not None:
        metrics["eval_tokens"] = heldout.numel()
        metrics["perplexity_before"] = handle_perplexity(handle, heldout, data.batch_size, "perplexity before")
        if teacher is not None:
            metrics["perplexity_teacher"] = handle_perplexity(teacher, heldout, data.batch_size, "perplexity teacher")
            metrics["kl_teacher_before"] = handle_kl(handle, teacher, heldout, data.batch_size, "KL to the teacher before")
    metrics.update(evaluate_handle(handle, task.evaluate, "before", seed=cfg.run.seed))
    ctx.log_metrics(metrics)

    # train
    result = handle.train(training, train, held, output_dir=ctx.run_dir / CHECKPOINTS_DIR, seed=cfg.run.seed,
                          teacher=teacher, distillation=task.get("distillation"), resume=bool(cfg.run.get("resume")),
                          tracker=ctx.tracker)
    metrics.update(result.metrics)
    # real tokens per row (packing=pad rows are part padding, which is no token seen)
    metrics["train_tokens"] = round(metrics["train_steps"] * int(training.global_batch_size)
                                    * train.stats.tokens / train.stats.sequences)
    ctx.record(training={"kind": result.kind, "history": result.history, "teacher": teacher_source,
                         "student": handle.provenance(cfg.run.get("load")),
                         "resumed_from": str(result.resumed_from) if result.resumed_from else None})

    # after
    if heldout is not None:
        metrics["perplexity_after"] = handle_perplexity(handle, heldout, data.batch_size, "perplexity after")
        if teacher is not None:
            metrics["kl_teacher_after"] = handle_kl(handle, teacher, heldout, data.batch_size, "KL to the teacher after")
        if "perplexity_teacher" in metrics:
            share, _ = recovered(metrics["perplexity_before"], metrics["perplexity_after"], metrics["perplexity_teacher"])
            if share is not None:
                metrics["perplexity_recovered"] = share
    metrics.update(evaluate_handle(handle, task.evaluate, "after", seed=cfg.run.seed))
    ctx.log_metrics(metrics)

    # outputs
    quantized = is_quantized(handle.model)
    if quantized:
        ctx.record(quantization={**quantization, **quantizer_summary(handle.model), "trained": result.kind})
    ctx.save_model(handle)
    export_dir = ctx.export_model(handle, "hf", task.export_dtype) if quantized and task.export else None
    if is_rank0():
        print_summary(cfg, task_name, result.kind, metrics, export_dir, ctx.run_dir,
                      student=handle.provenance(cfg.run.get("load")), teacher=teacher_source)
    return metrics


def print_summary(cfg, task_name: str, kind: str, metrics: Dict[str, Any], export_dir, run_dir,
                  student: Optional[str] = None, teacher: Optional[str] = None) -> None:
    lines = [f"optmodel {task_name}: {cfg.model.name} ({kind}) {metrics['train_steps']} steps "
             f"({metrics['train_tokens']} tokens seen) in {metrics['train_seconds']:.1f} s "
             f"({metrics['train_step_seconds'] or 0:.3f} s/step), final train loss {metrics['train_loss']:.4f}",
             f"  student     {student}"]
    if teacher:
        lines.append(f"  teacher     {teacher}")
    if "perplexity_after" in metrics:
        before, after = metrics["perplexity_before"], metrics["perplexity_after"]
        line = f"  perplexity  {before:.3f} -> {after:.3f}"
        why_not = ""
        if "perplexity_teacher" in metrics:
            share, why_not = recovered(before, after, metrics["perplexity_teacher"])
            line += f" (teacher {metrics['perplexity_teacher']:.3f}"
            if share is not None:
                line += f", {100 * share:.0f}% of the gap to it recovered"
            line += ")"
        lines.append(line + f" on {metrics['eval_tokens']} held-out tokens")
        if why_not:
            lines.append(f"              ({why_not})")
    if "kl_teacher_after" in metrics:
        lines.append(f"  KL          {metrics['kl_teacher_before']:.4f} -> {metrics['kl_teacher_after']:.4f} "
                     f"nats/token to the teacher (held out)")
    if metrics.get("sft_train_truncated_chats"):
        lines.append(f"  data        {metrics['sft_train_truncated_chats']} training chats cut by data.seq_len")
    lines.append(f"  model       {run_dir / 'model'}")
    if export_dir is not None:
        lines.append(f"  export      {export_dir}")
    print("\n".join(lines), flush=True)


def run(ctx) -> Dict[str, Any]:
    return train_task(ctx)
