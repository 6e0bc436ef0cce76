"""Draft vocabulary: the `draft_vocab_size` most frequent target tokens of the training data.

As ModelOpt's `calibrate_frequent_vocab`: d2t[i] = target_id(i) - i, so the draft's i-th
logit stands for target token i + d2t[i]; t2d marks the target tokens the draft can emit.
Unlike it, a set with fewer distinct tokens than the draft vocabulary is filled up with
the lowest unseen ids instead of refused (small data sets)."""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence, Tuple


def draft_vocab(token_rows: Iterable[Sequence[int]], draft_vocab_size: int, vocab_size: int) -> Tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
    import torch

    counts = Counter()
    for row in token_rows:
        counts.update(int(t) for t in row)
    chosen = [t for t, _ in counts.most_common(draft_vocab_size)]
    if len(chosen) < draft_vocab_size:
        seen = set(chosen)
        chosen += [t for t in range(vocab_size) if t not in seen][: draft_vocab_size - len(chosen)]
    # sorted: the draft's token order follows the target's (what EAGLE3 releases ship)
    target_ids = torch.tensor(sorted(chosen), dtype=torch.int64)
    d2t = target_ids - torch.arange(draft_vocab_size, dtype=torch.int64)
    t2d = torch.zeros(vocab_size, dtype=torch.bool)
    t2d[target_ids] = True
    return d2t, t2d
