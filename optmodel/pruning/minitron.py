"""backend=megatron pruning: ModelOpt's own `mtp.prune(mode="mcore_minitron")` on the
handle's GPTModel (what Megatron-LM's prune.sh runs), at any pipeline layout.

mcore_minitron scores and prunes in one call. Its per-rank search checkpoint (the
activations and layer scores of the forward loop) is the importance-scores cache:
`<run dir>/prune_scores_mcore/rank<r>.pth`, beside `scores.json` (the shape and layout it
was measured on). Given one (`task.scores`), mcore_minitron restores it and runs no forward.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from optmodel.backends.megatron_compat import minitron, minitron_collectives
from optmodel.manifest import atomic_write_text
from optmodel.pruning import targets
from optmodel.pruning.scores import shape_of

SCORES_DIR = "prune_scores_mcore"
SCORES_META = "scores.json"
# mcore_minitron's search-space granularity; 1: any export_config value is a valid choice
DIVISORS = dict(hidden_size_divisor=1, ffn_hidden_size_divisor=1, num_moe_experts_divisor=1, num_layers_divisor=1)


def scores_dir(path: str) -> Optional[Path]:
    """The scores dir `task.scores` names: the dir itself or <run dir>/prune_scores_mcore
    (light: validation calls it)."""
    p = Path(path).expanduser()
    for candidate in (p / SCORES_DIR, p):
        if (candidate / SCORES_META).is_file():
            return candidate
    return None


def layout_of(parallel) -> Dict[str, int]:
    return {"tensor": int(parallel.tensor), "pipeline": int(parallel.pipeline), "expert": int(parallel.expert),
            "pipeline_first_stage_layers": parallel.get("pipeline_first_stage_layers"),
            "pipeline_last_stage_layers": parallel.get("pipeline_last_stage_layers")}


def scores_problems(path: Optional[str], shape: Dict[str, Any], parallel) -> List[str]:
    """Why `task.scores` cannot serve this run: missing, another shape, another layout
    (the activations are per pipeline rank)."""
    if not path:
        return []
    found = scores_dir(path)
    if found is None:
        return [f"task.scores: {path} holds no megatron prune scores ({SCORES_DIR}/{SCORES_META}). Fix: the run dir "
                f"of an earlier backend=megatron task=prune of this model, or task.scores=null to score anew."]
    meta = json.loads((found / SCORES_META).read_text())
    diffs = [f"{k} {meta['shape'].get(k)} (scores) vs {v} (model)" for k, v in shape.items() if meta["shape"].get(k) != v]
    if diffs:
        return [f"task.scores: {found} was measured on another shape: {', '.join(diffs)}. Fix: scores of this model, "
                f"or task.scores=null to score anew."]
    if meta["layout"] != layout_of(parallel):
        return [f"task.scores: {found} was measured at layout {meta['layout']}, this run is {layout_of(parallel)}; "
                f"mcore_minitron keeps activations per pipeline rank. Fix: the same parallel= as that run, or "
                f"task.scores=null to score anew."]
    return []


class MegatronPruner:
    """`score` only keeps the batches: mcore_minitron runs them itself inside `prune`."""

    def __init__(self, handle, run_dir: Path, reuse: Optional[str]):
        self.handle = handle
        self.reused = scores_dir(reuse) if reuse else None
        self.written = None if reuse else Path(run_dir) / SCORES_DIR
        self.batches = None
        self.shape = None

    def score(self, batches):
        self.batches = batches
        return None

    def reuse(self, path: str, shape: Dict[str, Any]):
        return None  # validated at config time (scores_problems); mcore_minitron restores it

    @property
    def outputs(self) -> Dict[str, str]:
        return {"prune_scores": str(self.written)} if self.written else {}

    def prune(self, export_config: Dict[str, int], scores=None) -> Dict[str, Any]:
        import modelopt.torch.prune as mtp
        import torch.distributed as dist

        shape = shape_of(self.handle.architecture())

        minitron_module = minitron()
        checkpoint = self.reused or self.written
        config: Dict[str, Any] = {"checkpoint": str(checkpoint) + os.sep}
        if self.batches is not None:
            config["forward_loop"] = self.handle.forward_loop(self.batches, desc="importance")
        mode = [("mcore_minitron", minitron_module.get_mcore_minitron_config(**DIVISORS))]
        with minitron_collectives():
            mtp.prune(self.handle.model, mode=mode, constraints={"export_config": library_export_config(
                self.handle.cfg.model, export_config)}, dummy_input=None, config=config)
        drop_prune_state(self.handle.model)
        if self.written is not None and dist.get_rank() == 0:
            meta = {"shape": shape, "layout": layout_of(self.handle.parallel)}
            atomic_write_text(self.written / SCORES_META, json.dumps(meta, indent=1))
        info: Dict[str, Any] = {"depth_importance": "cosine (mcore_minitron)", "mcore_scores": str(checkpoint)}
        if "num_layers" in export_config:
            info["kept_layers"] = kept_layers(checkpoint, export_config["num_layers"])
        return info


def library_export_config(model_cfg, export_config: Dict[str, int]) -> Dict[str, int]:
    """mcore_minitron's export_config for ours: a shared expert whose width the family derives
    from the routed experts' (DeepSeek: moe_ffn_hidden_size x shared experts, as backend=hf
    prunes it) is given its width explicitly, since mcore_minitron prunes it separately."""
    out = dict(export_config)
    before, after = (targets._get(m, targets.EXPORT_KEYS["moe_shared_expert_intermediate_size"])
                     for m in (targets._plain(model_cfg), targets.pruned_model(model_cfg, export_config)))
    if before and after != before:
        out["moe_shared_expert_intermediate_size"] = after
    return out


def kept_layers(checkpoint: Path, num_layers: int) -> List[int]:
    """0-based indices of the layers mcore_minitron kept: the highest of its (1-based, all
    stages') layer scores in the search checkpoint, ranked as it ranks them."""
    import torch

    scores = torch.load(Path(checkpoint) / "rank0.pth", map_location="cpu", weights_only=False)["layer_scores"]
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    return sorted(layer - 1 for layer, _ in ranked[:num_layers])


def drop_prune_state(model) -> None:
    """Forget the mcore_minitron mode in the model's ModelOpt state. The pruned model is
    plain megatron-core modules (ModelOpt exported them) and the mode's restore does nothing
    (ModelOpt 0.46.1, restore_mcore_minitron); kept, every later load of the checkpoint
    would need ModelOpt's Minitron plugin only to replay that no-op. Modes applied before
    (a quantized model's) stay."""
    from modelopt.torch.opt.conversion import ModeloptStateManager

    if not ModeloptStateManager.is_converted(model):
        return
    manager = ModeloptStateManager(model)
    manager._state[:] = [(mode, state) for mode, state in manager.state_dict()
                         if mode not in ("mcore_minitron", "export_nas")]
    if not manager.has_state:
        ModeloptStateManager.remove_state(model)
