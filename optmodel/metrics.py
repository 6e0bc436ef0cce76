"""Metrics shared by tasks."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Tuple

from tqdm import tqdm

from optmodel.allocator import release_freed_memory

# Largest logits block scored at once (floats): 32 M = 128 MiB of float32, whatever the vocabulary
# and sequence length (Qwen3's 151,936-token vocabulary: ~220 positions per block).
LOGITS_CHUNK_ELEMENTS = 1 << 25


def logit_blocks(logits, start: int = 0, stop: Optional[int] = None,
                 max_elements: int = LOGITS_CHUNK_ELEMENTS) -> Iterable[Tuple[slice, int, "torch.Tensor"]]:  # noqa: F821
    """(rows, first position, float32 block) views over an already computed [b, s, vocab]
    tensor, positions [start, stop), each block at most `max_elements` floats (one row x
    one position at least): the one chunking every scorer shares."""
    batch, seq, vocab = logits.shape
    stop = seq if stop is None else stop
    rows = max(1, min(batch, max_elements // vocab))
    cols = max(1, max_elements // (rows * vocab))
    for r in range(0, batch, rows):
        for c in range(start, stop, cols):
            yield slice(r, min(batch, r + rows)), c, logits[r:r + rows, c:min(stop, c + cols)].float()


def chunked_perplexity(chunks_of: Callable, sequences, batch_size: int, device, desc: str = "perplexity") -> float:
    """exp(mean next-token NLL) over packed [n, seq_len] sequences, every token counted once,
    for any `chunks_of(input_ids, stop) -> (rows, first position, [rows, k, vocab] logits)`
    covering positions [0, stop): no more than one block of logits exists at a time."""
    import torch

    release_freed_memory()  # what earlier stages freed is not held through this one's peak
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for start in tqdm(range(0, len(sequences), batch_size), desc=desc, unit="batch", leave=False):
            batch = sequences[start : start + batch_size].to(device)
            seq = batch.shape[1]
            for rows, first, block in chunks_of(batch, seq - 1):
                targets = batch[rows, first + 1 : first + 1 + block.shape[1]]
                total_nll += torch.nn.functional.cross_entropy(
                    block.reshape(-1, block.size(-1)), targets.reshape(-1), reduction="sum").item()
            total_tokens += batch[:, 1:].numel()
    return math.exp(total_nll / total_tokens)


def perplexity_of(logits_of: Callable, sequences, batch_size: int, device, desc: str = "perplexity") -> float:
    """The same over any `logits_of(input_ids) -> [batch, seq, vocab]` (whole logits: the
    reference the chunked scorers are tested against); the loss is still taken per block."""
    return chunked_perplexity(lambda batch, stop: logit_blocks(logits_of(batch), 0, stop), sequences, batch_size,
                              device, desc)
