"""Token generation on backend=megatron: megatron-core's static KV cache, at any TP / PP.

megatron-core's inference path (`StaticInferenceContext` passed to `GPTModel.forward`) runs
on CPU as shipped: the prompt is encoded once (prefill, causal mask), then each step feeds
one token per row and attends to the cached keys / values. Its greedy tokens equal a loop
re-running the whole sequence per token (measured here on the tiny Qwen3, Qwen3-MoE, Llama,
Llama-4, DeepSeek and gpt-oss models, gpt-oss's sliding window beyond its width included). With PP > 1 each step goes through
megatron-core's forward-only pipeline schedule; every stage keeps the cache of its layers.

Every rank gets the same tokens: the last-token logits are gathered across tensor-parallel
ranks and broadcast from the last pipeline stage, and the sampled tokens are broadcast from
rank 0, so all ranks stay in lock-step.
"""

from __future__ import annotations

from typing import Sequence

from optmodel.backends.megatron_cpu import causal_mask
from optmodel.backends.megatron_pipeline import pipeline_broadcast_logits

PADDED_ROWS_REFUSAL = ("backend=megatron generates from unpadded prompts (its forward takes no attention mask); "
                       "this batch is left-padded. Fix: one prompt per call (generate_ids does so for this handle).")


def generate_tokens(handle, input_ids, attention_mask, max_new_tokens: int, do_sample: bool, temperature: float,
                    top_p: float, top_k: int, stop_token_ids: Sequence[int], generator=None):
    """[b, prompt] token ids (rows of one length) -> [b, <= max_new_tokens] new ids. Rows
    that hit a stop token are padded with it while the others go on. Collective."""
    import torch
    from megatron.core.inference.contexts import StaticInferenceContext

    from optmodel.evaluation.generation import SamplingOptions, next_token

    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError(PADDED_ROWS_REFUSAL)
    device = handle.device
    tokens = input_ids.to(device)
    batch, prompt = tokens.shape
    opts = SamplingOptions(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                           top_p=top_p, top_k=top_k)
    stops = torch.tensor([t for t in stop_token_ids if t is not None] or [-1], device=device)
    cache = StaticInferenceContext(batch, prompt + max_new_tokens)
    positions = torch.arange(prompt, device=device).unsqueeze(0).expand(batch, -1)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = last_token_logits(handle.model, tokens, positions, cache, device)
            cache.sequence_len_offset += tokens.shape[1]
            tok = _same_on_every_rank(next_token(logits, opts, generator))
            tok = torch.where(done, new[-1] if new else tok, tok)  # finished rows repeat their stop token
            new.append(tok)
            done |= torch.isin(tok, stops)
            if bool(done.all()):
                break
            tokens = tok[:, None]
            positions = torch.full((batch, 1), cache.sequence_len_offset, dtype=torch.long, device=device)
    return torch.stack(new, dim=1) if new else torch.zeros((batch, 0), dtype=torch.long)


def last_token_logits(model, tokens, positions, cache, device):
    """[b, vocab] float32 logits of the last position, on every rank; the KV cache in `cache`
    grows by tokens.shape[1] positions (the caller advances its offset)."""
    from megatron.core import parallel_state

    def stage_forward(stage_model, ids):
        # prefill: causal over the prompt; decode: the new token sees every cached key (megatron
        # drops the causal mask itself once the cache holds positions; sliding windows still apply)
        mask = causal_mask(ids.shape[1], device) if cache.sequence_len_offset == 0 else None
        return stage_model(ids, positions, attention_mask=mask, inference_context=cache, runtime_gather_output=True)

    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return stage_forward(model, tokens)[:, -1].float()
    return pipeline_broadcast_logits(model, tokens, device, stage_forward, out_seq=1)[:, -1]


def _same_on_every_rank(tokens):
    """Rank 0's tokens everywhere (ranks already agree; this makes lock-step independent of
    floating-point ties)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(tokens, src=0)
    return tokens

