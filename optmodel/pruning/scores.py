"""The importance scores of one model, cached in the run dir (`prune_scores.pt`) and reused
by `task.scores=<file or run dir>`: a second prune of the same model to another target
then runs no calibration forward at all.

The file holds every dimension's scores (whatever the target), both depth measures, and
the shape they were measured on; reuse refuses scores of another shape.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

SCORES_FILE = "prune_scores.pt"
SHAPE_KEYS = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups")
FORMAT = 1


def shape_of(arch: Dict[str, Any]) -> Dict[str, Any]:
    """The dimensions scores depend on, from an architecture dict (ModelConfig names)."""
    shape = {k: arch.get(k) for k in SHAPE_KEYS}
    moe = arch.get("moe") or {}
    shape.update(num_experts=moe.get("num_experts"), moe_ffn_hidden_size=moe.get("ffn_hidden_size"))
    return shape


def resolve(path: str, name: str = SCORES_FILE) -> Optional[Path]:
    """The scores file `task.scores` names: the file itself, or <run dir>/<name>.
    Light (no torch): validation calls it."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / name
    return p if p.is_file() else None


def problems(path: Optional[str], name: str = SCORES_FILE):
    if not path:
        return []
    if resolve(path, name) is None:
        return [f"task.scores: {path} is neither a scores file nor a run dir holding {name}. Fix: the run dir "
                f"of an earlier task=prune of this model (or its {name}), or task.scores=null to score anew."]
    return []


def save(path: Path, scores: Dict[str, Any], shape: Dict[str, Any], meta: Dict[str, Any]) -> Path:
    """Atomic torch.save of {format, shape, scores, meta}."""
    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"format": FORMAT, "shape": shape, "scores": scores, "meta": meta}, tmp)
    os.replace(tmp, path)
    return path


class ScoresMismatch(ValueError):
    pass


def load(path: str, shape: Dict[str, Any]) -> Dict[str, Any]:
    """{scores, shape, meta} of `task.scores`, refused when measured on another shape."""
    import torch

    file = resolve(path)
    data = torch.load(file, map_location="cpu", weights_only=False)
    if data.get("format") != FORMAT:
        raise ScoresMismatch(f"task.scores: {file} is not an optmodel prune scores file (format {data.get('format')}).")
    diffs = {k: (v, shape.get(k)) for k, v in data["shape"].items() if v != shape.get(k)}
    if diffs:
        what = ", ".join(f"{k} {a} (scores) vs {b} (model)" for k, (a, b) in diffs.items())
        raise ScoresMismatch(f"task.scores: {file} was measured on another shape: {what}. Fix: scores of this model "
                             f"(its unpruned run), or task.scores=null to score anew.")
    return data


def missing_depth_measure(path: str, measure: str) -> Optional[str]:
    """The problem of reusing `path` to rank layers by `measure`, when it was not recorded."""
    import torch

    file = resolve(path)
    if file is None:
        return None
    data = torch.load(file, map_location="cpu", weights_only=False)
    if f"layers_{measure}" in data.get("scores", {}):
        return None
    held = sorted(k[len("layers_"):] for k in data.get("scores", {}) if k.startswith("layers_"))
    return (f"task.depth_importance: {file} holds no {measure} layer scores (it was scored with "
            f"{', '.join(held) or 'none'}). Fix: task.depth_importance={held[0] if held else 'cosine'}, or "
            f"task.scores=null to score anew.")
