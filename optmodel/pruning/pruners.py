"""One pruner per backend behind the same two calls, so task=prune reads the same on both:

    pruner.score(batches) -> scores (or None when the library keeps its own) ; pruner.prune(export_config, scores)

- hf: ModelOpt's importance hooks on the transformers model (importance.py), layer
  importance (depth.py), then module surgery (apply.py / slicing.py).
- megatron: ModelOpt's own `mtp.prune(mode="mcore_minitron")` on the GPTModel (needs
  Transformer-Engine; refused at validation without it). Its per-rank search checkpoint
  is the scores cache: given one, mcore_minitron restores the activations and skips the
  forward loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from optmodel.pruning import scores as score_files

DEPTH_MEASURES = ("skip_loss", "cosine")
MCORE_SCORES_FILE = "prune_scores_mcore.pth"
# mcore_minitron's search-space granularity; 1: any export_config value is a valid choice
MCORE_DIVISORS = dict(hidden_size_divisor=1, ffn_hidden_size_divisor=1, num_moe_experts_divisor=1, num_layers_divisor=1)


class HFPruner:
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
        scores["layers_cosine"] = scores.pop("layers")
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


class MegatronPruner:
    """mcore_minitron scores and prunes in one call; `score` only remembers the batches."""

    def __init__(self, handle, scores_path: Path):
        self.handle = handle
        self.scores_path = Path(scores_path)
        self.batches: Optional[List[dict]] = None

    def score(self, batches: List[dict]):
        self.batches = batches
        return None

    def reuse(self, path: str, shape: Dict[str, Any]):
        return None  # mcore_minitron restores its own checkpoint (self.scores_path) and skips the forward loop

    def prune(self, export_config: Dict[str, int], scores) -> Dict[str, Any]:
        import modelopt.torch.prune as mtp
        from modelopt.torch.prune.plugins.mcore_minitron import get_mcore_minitron_config

        config: Dict[str, Any] = {"checkpoint": str(self.scores_path)}
        if self.batches is not None:
            config["forward_loop"] = self.handle.forward_loop(self.batches, desc="importance")
        mode = [("mcore_minitron", get_mcore_minitron_config(**MCORE_DIVISORS))]
        mtp.prune(self.handle.model, mode=mode, constraints={"export_config": dict(export_config)},
                  dummy_input=None, config=config)
        return {"depth_importance": "cosine (mcore_minitron)", "mcore_scores": str(self.scores_path)}


def pruner_for(handle, task, run_dir: Path):
    """The pruner of the handle's backend."""
    if handle.backend == "megatron":
        source = score_files.resolve(task.scores, MCORE_SCORES_FILE) if task.scores else None
        return MegatronPruner(handle, source or Path(run_dir) / MCORE_SCORES_FILE)
    return HFPruner(handle, task.depth_importance, task.depth_batches)


def transformer_engine_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformer_engine") is not None
