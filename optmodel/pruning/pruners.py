"""One pruner per backend behind the same two calls, so task=prune reads the same on both:

    pruner.score(batches) -> scores (or None when the library keeps its own) ; pruner.prune(export_config, scores)

- hf: ModelOpt's importance hooks on the transformers model (importance.py), layer
  importance (depth.py), then module surgery (apply.py / slicing.py).
- megatron: ModelOpt's own `mtp.prune(mode="mcore_minitron")` on the GPTModel
  (minitron.py); its per-rank search checkpoint is the scores cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from optmodel.pruning import scores as score_files
from optmodel.pruning.minitron import MegatronPruner

DEPTH_MEASURES = ("skip_loss", "cosine")


class HFPruner:
    outputs: Dict[str, str] = {}  # the task writes the scores file (task=prune)

    def __init__(self, handle, depth_importance: str, depth_batches: int):
        self.handle = handle
        self.depth_importance = depth_importance or "skip_loss"
        self.depth_batches = depth_batches

    def score(self, batches: List[dict]) -> Dict[str, Any]:
        import torch

        from optmodel.pruning import importance, layout
        from optmodel.pruning.depth import skip_loss_increase

        model, device = self.handle.model, self.handle.device
        result = importance.score(model, batches, device)
        scores = result["scores"]
        scores["layers_cosine"] = scores.pop("layers")  # free: from the scoring pass itself
        if self.depth_importance == "skip_loss":
            # skipping a block is measured on the first depth_batches batches (one pass per layer)
            with torch.no_grad():
                scores["layers_skip_loss"] = skip_loss_increase(model, list(layout.layers(model)),
                                                                batches[: self.depth_batches], device)
        return scores

    def reuse(self, path: str, shape: Dict[str, Any]) -> Dict[str, Any]:
        return score_files.load(path, shape)["scores"]

    def prune(self, export_config: Dict[str, int], scores: Dict[str, Any]) -> Dict[str, Any]:
        from optmodel.pruning import apply, depth

        chosen = dict(scores, layers=scores[f"layers_{self.depth_importance}"])
        info: Dict[str, Any] = {"depth_importance": self.depth_importance}
        if "num_layers" in export_config:
            info["kept_layers"] = depth.layers_to_keep(chosen["layers"], export_config["num_layers"])
        apply.prune(self.handle.model, chosen, export_config)
        return info


def pruner_for(handle, task, run_dir: Path):
    """The pruner of the handle's backend."""
    if handle.backend == "megatron":
        return MegatronPruner(handle, run_dir, task.scores)
    return HFPruner(handle, task.depth_importance, task.depth_batches)
