"""Layer importance for depth pruning: the cosine distance a decoder block makes to the
hidden state, 1 - cos(input, output), averaged over tokens and calibration batches.

Why this measure: it is the one ModelOpt's `mcore_minitron` ranks layers by (so both
backends drop the same kind of layer), and it comes from the very forward pass that feeds
the width hooks: no extra pass per layer, unlike the perplexity-when-skipped measure, which
costs one full evaluation per layer. A block whose output barely turns the residual stream
(distance near 0) is the one the model misses least.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F


class BlockDistanceHook:
    """Forward hook (with kwargs) on one decoder layer accumulating 1 - cos(input, output)."""

    def __init__(self):
        self.total = 0.0
        self.calls = 0

    def __call__(self, module, args, kwargs, output):
        hidden_in = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        hidden_out = output[0] if isinstance(output, tuple) else output
        with torch.no_grad():
            cos = F.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
            self.total += float((1 - cos).mean())
        self.calls += 1

    def score(self) -> float:
        if not self.calls:
            raise RuntimeError("no calibration batch reached this decoder layer")
        return self.total / self.calls


def layers_to_keep(scores: torch.Tensor, num_layers: int) -> List[int]:
    """The `num_layers` most important layer indices, in model order."""
    order = torch.argsort(scores, descending=True)[:num_layers]
    return sorted(int(i) for i in order)
