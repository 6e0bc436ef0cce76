"""KL(teacher || student) on held-out text: how far a student's next-token distribution is
from its teacher's, reported before and after distillation beside perplexity."""

from __future__ import annotations

import itertools

from tqdm import tqdm


def handle_kl(student, teacher, sequences, batch_size: int, desc: str = "KL to the teacher") -> float:
    """Mean per-token KL(teacher || student) over packed [n, seq_len] sequences, every predicted
    position counted once; both handles' logits scored block by block (`logits_chunks`, the same
    blocks on both: one vocabulary), collective like them."""
    import torch
    import torch.nn.functional as F

    total, positions = 0.0, 0
    with torch.no_grad():
        for start in tqdm(range(0, len(sequences), batch_size), desc=desc, unit="batch", leave=False):
            batch = sequences[start:start + batch_size]
            seq = batch.shape[1]
            s_chunks = student.logits_chunks(batch.to(student.device), None, 0, seq - 1)
            t_chunks = teacher.logits_chunks(batch.to(teacher.device), None, 0, seq - 1)
            # both generators run to their end here: one left suspended inside its own no_grad
            # block would switch gradients off whenever it is garbage collected (mid-training)
            for (_, _, s_block), (_, _, t_block) in itertools.zip_longest(s_chunks, t_chunks):
                t_log = F.log_softmax(t_block.to(s_block.device), dim=-1)
                kl = (t_log.exp() * (t_log - F.log_softmax(s_block, dim=-1))).sum(-1)
                total += float(kl.sum())
                positions += kl.numel()
    return total / max(positions, 1)
