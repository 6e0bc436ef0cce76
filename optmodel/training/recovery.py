"""How much of the student's perplexity gap to its teacher a training run recovered.

    recovered = (before - after) / (before - teacher)

with `before` the student as it started (pruned, or PTQ for QAD), `after` the trained student
and `teacher` the teacher, all held-out perplexities. It is a share only when the teacher is
better than the student before and the result lies between the two; otherwise there is no
share to speak of and the reason is given instead of a number.
"""

from __future__ import annotations

from typing import Optional, Tuple


def recovered(before: float, after: float, teacher: float) -> Tuple[Optional[float], str]:
    """(share in [0, 1], "") where meaningful, else (None, why no share is given)."""
    if teacher >= before:
        return None, (f"no recovery share: the teacher ({teacher:.3f}) is not better than the student "
                      f"before training ({before:.3f})")
    if after > before:
        return None, f"no recovery share: the student got worse ({before:.3f} -> {after:.3f})"
    if after < teacher:
        return None, (f"no recovery share: the student ({after:.3f}) ended better than its teacher "
                      f"({teacher:.3f}); the teacher is no bound")
    return (before - after) / (before - teacher), ""
