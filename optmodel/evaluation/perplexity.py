"""Held-out perplexity through a handle, so every backend and task reports the same metric."""

from __future__ import annotations

from typing import Tuple

from optmodel.data.text import dataset_texts, pack
from optmodel.metrics import chunked_perplexity


def handle_perplexity(handle, sequences, batch_size: int, desc: str = "perplexity") -> float:
    """exp(mean next-token NLL) over packed [n, seq_len] sequences (no padding), every
    predicted token counted once. Logits are scored block by block (`handle.logits_chunks`):
    memory beyond the hidden states is one block, not [batch, seq, vocab]."""
    return chunked_perplexity(lambda batch, stop: handle.logits_chunks(batch, None, 0, stop), sequences, batch_size,
                              handle.device, desc)


def dataset_perplexity(handle, data_cfg, desc: str = "perplexity") -> Tuple[float, int]:
    """Perplexity of the run's held-out text (data=: eval split), and the tokens it covers."""
    sequences = pack(handle.tokenizer, dataset_texts(data_cfg, "eval"), data_cfg.seq_len,
                     data_cfg.eval_max_sequences, "data.eval_path")
    return handle_perplexity(handle, sequences, data_cfg.batch_size, desc), sequences.numel()
