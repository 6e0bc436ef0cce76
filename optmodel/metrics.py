"""Metrics shared by tasks."""

from __future__ import annotations

import math
from typing import Callable

from tqdm import tqdm


def perplexity_of(logits_of: Callable, sequences, batch_size: int, device, desc: str = "perplexity") -> float:
    """exp(mean next-token NLL) over packed [n, seq_len] sequences, every token counted once,
    for any `logits_of(input_ids) -> [batch, seq, vocab]`."""
    import torch

    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for start in tqdm(range(0, len(sequences), batch_size), desc=desc, unit="batch", leave=False):
            batch = sequences[start : start + batch_size].to(device)
            logits = logits_of(batch).float()
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="sum"
            )
            total_nll += nll.item()
            total_tokens += batch[:, 1:].numel()
    return math.exp(total_nll / total_tokens)
