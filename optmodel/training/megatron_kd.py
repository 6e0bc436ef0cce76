"""Knowledge distillation and the loss of one micro-batch on megatron-core, as Megatron-LM's
post-training does it (megatron/post_training/loss_func.py, `--export-kd-cfg`).

The student becomes a `DistillationModel` through ModelOpt's Megatron plugin
(`setup_distillation_config` builds LogitsKLLoss / HiddenStateCosineLoss / MSELoss from the
task.distillation group, `adjust_distillation_model_for_mcore` hides the teacher from
checkpoints and skips the LM loss when asked). Each micro-batch's loss is the masked sum of
per-token losses over target tokens; the schedule divides it by the returned token count.
"""

from __future__ import annotations

from functools import partial

from optmodel.backends.megatron_cpu import causal_mask

IGNORE_INDEX = -100


def distillation_model(student, teacher, d):
    """`mtd.convert` the student stage into a DistillationModel with the teacher stage of the
    same layout; `d` is a DistillationConfig node (optmodel.training.config)."""
    import modelopt.torch.distill as mtd
    import torch
    from modelopt.torch.distill.plugins.megatron import (DistillationConfig, adjust_distillation_model_for_mcore,
                                                          setup_distillation_config)

    config = DistillationConfig(
        intermediate_layer_pairs=[tuple(pair) for pair in (d.intermediate_layer_pairs or [])],
        logit_layers=tuple(d.logit_layers) if d.logit_layers else ("output_layer", "output_layer"),
        skip_lm_loss=bool(d.skip_lm_loss), kd_loss_scale=float(d.kd_loss_scale),
        logit_kl_temperature=float(d.logit_kl_temperature))
    config = setup_distillation_config(config, student.config, teacher.config)
    model = mtd.convert(student, mode=[("kd_loss", {"teacher_model": teacher, "criterion": config.criterion,
                                                    "loss_balancer": config.loss_balancer})])
    adjust_distillation_model_for_mcore(model, config)
    lm_loss = model.compute_language_model_loss

    def lm_loss_on_a_copy(labels, logits):
        # megatron-core's vocab-parallel cross entropy works in place on `logits.float()`, which
        # for fp32 logits is the tensor ModelOpt's hook captured for the KD loss (measured with
        # the LM loss kept: per-token logits KL 5.37 at step 1 instead of 0.389); bf16 logits get
        # a float copy anyway
        return lm_loss(labels, logits.clone() if logits.dtype == torch.float32 else logits)

    model.compute_language_model_loss = lm_loss_on_a_copy
    return model


def megatron_batch(batch):
    """An SFT batch (HF layout: labels[t] is token t, IGNORE_INDEX where not trained) ->
    megatron's (tokens, labels, loss_mask) where labels[t] is the token after t."""
    import torch

    tokens = batch["input_ids"]
    following = torch.full_like(batch["labels"], IGNORE_INDEX)
    following[:, :-1] = batch["labels"][:, 1:]
    loss_mask = (following != IGNORE_INDEX).float()
    if "attention_mask" in batch:  # right padding (packing=pad) is never a target
        loss_mask = loss_mask * batch["attention_mask"].float()
    labels = following.clamp(min=0)
    return tokens, labels, loss_mask


def masked_sum(output, loss_mask):
    """Megatron-LM's `_mask_loss`: the per-token loss ([b, s], or the plugin's (loss, tp_reduce,
    sequence_parallel)) summed over target tokens; TP-partial losses summed over the TP group."""
    import torch
    from megatron.core import parallel_state

    tp_reduce = sequence_parallel = False
    if isinstance(output, tuple):
        output, tp_reduce, sequence_parallel = output
    if sequence_parallel:  # an intermediate activation split along the sequence
        rank = parallel_state.get_tensor_model_parallel_rank()
        loss_mask = torch.tensor_split(loss_mask, parallel_state.get_tensor_model_parallel_world_size(), dim=1)[rank]
    loss = torch.sum(output.reshape(-1).float() * loss_mask.reshape(-1).float())
    if tp_reduce or sequence_parallel:
        torch.distributed.all_reduce(loss, group=parallel_state.get_tensor_model_parallel_group())
    return loss


def loss_func(loss_mask, model, output_tensor):
    """(loss, target tokens, report) of one micro-batch: the KD loss when training a
    DistillationModel, else the LM loss."""
    from modelopt.torch.distill import DistillationModel

    while hasattr(model, "module"):  # megatron-core's DDP wrapper
        model = model.module
    lm = masked_sum(output_tensor, loss_mask)
    tokens = loss_mask.sum().detach().to(lm.device).int()
    # per-token figures for the log; copies, since the schedule divides the returned loss in place
    per_token = lambda loss: float(loss.detach()) / max(int(tokens), 1)  # noqa: E731
    report = {"lm_loss": per_token(lm)}
    if model.training and isinstance(model, DistillationModel):
        losses = model.compute_kd_loss(student_loss=lm, loss_reduction_fn=partial(_reduce, loss_mask))
        report.update({name: per_token(losses[name]) for name in ("kd_loss", "logits_loss", "intermediate_loss")})
        return losses["kd_loss"], tokens, report
    return lm, tokens, report


def _reduce(loss_mask, output):
    return masked_sum(output, loss_mask)


def forward_step(device):
    """megatron-core's forward_step_func over an iterator of SFT batches."""
    import torch

    def step(data_iterator, model):
        tokens, labels, loss_mask = megatron_batch(next(data_iterator))
        tokens, labels, loss_mask = tokens.to(device), labels.to(device), loss_mask.to(device)
        positions = torch.arange(tokens.shape[1], device=device).unsqueeze(0).expand_as(tokens)
        # vocab-parallel logits, as Megatron-LM trains: the handle's model gathers them for scoring
        # (parallel_output=False), which megatron's vocab-parallel cross entropy and ModelOpt's
        # LogitsKLLoss would read as one TP shard each (measured: CE + log 2 at TP 2)
        output = model(tokens, positions, attention_mask=causal_mask(tokens.shape[1], device), labels=labels,
                       runtime_gather_output=False)
        return output, partial(loss_func, loss_mask, model)

    return step
