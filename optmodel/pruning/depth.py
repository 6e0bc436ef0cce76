"""Layer importance for depth pruning, two measures:

- skip_loss (default): how much the calibration loss rises when the block alone is skipped
  (replaced by the identity). It measures what perplexity will show, directly. On the
  bundled tiny models it picks the layer whose removal costs least held-out perplexity,
  where the cosine distance does not (tiny_llama 4 -> 3 layers: cosine drops layer 2,
  perplexity 5.13; skip_loss drops layer 3, 4.88; tiny_qwen3_moe: 5.16 vs 4.54). Cost:
  one extra pass over the depth batches per layer (`task.depth_batches` bounds it).
- cosine: 1 - cos(block input, block output), averaged over tokens: what ModelOpt's
  mcore_minitron ranks layers by, free (it comes from the scoring pass itself).
The scores file always holds cosine, and skip_loss when it was the measure asked for (so
a file scored with cosine serves cosine only: `missing_depth_measure`).
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


def _skip(module, args, kwargs, output):
    """Forward hook making a decoder block the identity (its input passes through)."""
    hidden_in = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    return (hidden_in, *output[1:]) if isinstance(output, tuple) else hidden_in


def _mean_loss(model, batches, device) -> float:
    total, n = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch["input_ids"]
        if "attention_mask" in batch:
            labels = labels.masked_fill(batch["attention_mask"] == 0, -100)
        total += float(model(**batch, labels=labels, use_cache=False).loss)
        n += 1
    return total / n


def skip_loss_increase(model, layers, batches, device) -> torch.Tensor:
    """Per layer, how much the calibration loss rises when that block alone is skipped
    (the measured alternative to the cosine distance: len(layers) + 1 passes over `batches`)."""
    from tqdm import tqdm

    with torch.no_grad():
        base = _mean_loss(model, batches, device)
        rises = []
        for layer in tqdm(layers, desc="layer skip loss", unit="layer"):
            handle = layer.register_forward_hook(_skip, with_kwargs=True)
            try:
                rises.append(_mean_loss(model, batches, device) - base)
            finally:
                handle.remove()
    return torch.tensor(rises)
