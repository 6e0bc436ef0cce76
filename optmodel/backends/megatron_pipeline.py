"""Forward passes through megatron-core's pipeline schedule, for callers that need the
result on every rank (logits for scoring, last-token logits for generation)."""

from __future__ import annotations


def pipeline_broadcast_logits(model, input_ids, device, stage_forward, out_seq=None):
    """[batch, out_seq (default: seq), vocab] float32 logits of `stage_forward(stage_model, ids)`
    run through megatron-core's forward-only pipeline schedule, broadcast from the last stage."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    batch, seq = input_ids.shape

    def forward_step(data_iterator, stage_model):
        output = stage_forward(stage_model, next(data_iterator))
        # collect_non_loss_data: the schedule stores what this returns on the last stage
        return output, lambda output_tensor, non_loss_data=True: output_tensor

    outputs = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter([input_ids]),
        model=[model],
        num_microbatches=1,
        seq_length=seq,
        micro_batch_size=batch,
        forward_only=True,
        collect_non_loss_data=True,
    )
    vocab = model.vocab_size
    if parallel_state.is_pipeline_last_stage():
        logits = outputs[0].float().contiguous()
    else:
        logits = torch.empty(batch, out_seq or seq, vocab, dtype=torch.float32, device=device)
    last = parallel_state.get_pipeline_model_parallel_last_rank()
    dist.broadcast(logits, src=last, group=parallel_state.get_pipeline_model_parallel_group())
    return logits
