"""The one forward interface evaluation needs from a model handle.

`Forward.logits(input_ids, attention_mask)` -> [batch, seq, vocab] float logits. The lm-eval
adapter, perplexity and generation call only this (and the handle's KV-cached
`generate_tokens` where it has one), so any backend plugs in. Contract of a handle's
`logits`: every rank calls it with the same batch, and it returns the full-vocabulary logits
on every rank (gathered across tensor-parallel ranks, broadcast from the last pipeline
stage), so all ranks take the same decisions and stay in lock-step; only rank 0 writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass
class Forward:
    logits_fn: Callable  # (input_ids, attention_mask or None) -> logits
    device: "torch.device"  # noqa: F821
    max_length: int  # longest sequence the model takes
    takes_mask: bool  # False: padded batches are right-padded (exact under causal attention)
    generate_fn: Optional[Callable] = None  # backend's own (KV-cached) generation, if any
    chunks_fn: Optional[Callable] = None  # (ids, mask, start, stop) -> (rows, first, block) (handle.logits_chunks)

    def logits(self, input_ids, attention_mask=None):
        if self.takes_mask:
            return self.logits_fn(input_ids, attention_mask)
        return self.logits_fn(input_ids)

    def logits_chunks(self, input_ids, attention_mask=None, start: int = 0, stop: Optional[int] = None):
        """(rows, first position, float32 block) over positions [start, stop): scorers hold one
        block of logits at a time, never [batch, seq, vocab]."""
        mask = attention_mask if self.takes_mask else None
        if self.chunks_fn is not None:
            return self.chunks_fn(input_ids, mask, start, stop)
        from optmodel.metrics import logit_blocks

        return logit_blocks(self.logits(input_ids, mask), start, stop)


def handle_forward(handle) -> Forward:
    """The Forward of any backend's handle (see optmodel/backends/handle.py)."""
    return Forward(logits_fn=handle.logits, device=handle.device, max_length=handle.max_length,
                   takes_mask=handle.takes_mask, generate_fn=handle.generate_tokens,
                   chunks_fn=handle.logits_chunks)
