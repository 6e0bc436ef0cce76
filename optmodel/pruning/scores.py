"""The importance scores of one model, cached in the run dir (`prune_scores.pt`) and reused
by `task.scores=<file or run dir>`: a second prune of the same model to another target
then runs no calibration forward at all.

The file holds every dimension's scores (whatever the target), both depth measures, and
the shape they were measured on; reuse refuses scores of another shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from optmodel.manifest import atomic_file

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


def problems(path: Optional[str], name: str = SCORES_FILE, model=None):
    """Why `task.scores` cannot be reused, told without torch: missing, not a torch.save
    archive, not optmodel's format, or (with `model`, the run's model config) another shape."""
    if not path:
        return []
    file = resolve(path, name)
    fix = f"Fix: the run dir of an earlier task=prune of this model (or its {name}), or task.scores=null to score anew."
    if file is None:
        return [f"task.scores: {path} is neither a scores file nor a run dir holding {name}. {fix}"]
    header = read_header(file) if name == SCORES_FILE else ({} if is_torch_file(file) else None)
    if header is None:
        return [f"task.scores: {file} is not a scores file (not a torch.save archive: damaged, or another file). {fix}"]
    if name != SCORES_FILE:
        return []
    if header.get("format") != FORMAT:
        return [f"task.scores: {file} is not an optmodel prune scores file (format {header.get('format')}). {fix}"]
    if model is not None and (diff := shape_difference(header.get("shape") or {}, shape_of(model))):
        return [f"task.scores: {file} was measured on another shape: {diff}. {fix}"]
    return []


def shape_difference(scores_shape: Dict[str, Any], model_shape: Dict[str, Any]) -> str:
    return ", ".join(f"{k} {v} (scores) vs {model_shape.get(k)} (model)"
                     for k, v in scores_shape.items() if v != model_shape.get(k))


def is_torch_file(path: Path) -> bool:
    """Whether `path` is a torch.save archive (a zip holding <name>/data.pkl), told without torch."""
    return _pickle_member(path) is not None


def _pickle_member(path: Path) -> Optional[str]:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            return names[0] if names and archive.testzip() is None else None
    except (OSError, zipfile.BadZipFile, EOFError):
        return None


def read_header(path: Path) -> Optional[Dict[str, Any]]:
    """The plain-Python part ({format, shape, meta}) of a scores file, without torch: tensors
    unpickle as None (their storages are not read); None when the file is not one."""
    import pickle
    import zipfile

    member = _pickle_member(path)
    if member is None:
        return None

    class Skeleton(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "collections" and name == "OrderedDict":
                return dict
            if module.split(".")[0] == "torch":
                return lambda *args, **kwargs: None
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a scores file")

        def persistent_load(self, pid):
            return None

    try:
        with zipfile.ZipFile(path) as archive, archive.open(member) as f:
            data = Skeleton(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError):
        return None
    return {k: data.get(k) for k in ("format", "shape", "meta")} if isinstance(data, dict) else None


def save(path: Path, scores: Dict[str, Any], shape: Dict[str, Any], meta: Dict[str, Any]) -> Path:
    """Atomic torch.save of {format, shape, scores, meta}."""
    import torch

    with atomic_file(path) as tmp:
        torch.save({"format": FORMAT, "shape": shape, "scores": scores, "meta": meta}, tmp)
    return Path(path)


class ScoresMismatch(ValueError):
    pass


def load(path: str, shape: Dict[str, Any]) -> Dict[str, Any]:
    """{scores, shape, meta} of `task.scores`, refused when measured on another shape."""
    import torch

    file = resolve(path)
    data = torch.load(file, map_location="cpu", weights_only=False)
    if data.get("format") != FORMAT:
        raise ScoresMismatch(f"task.scores: {file} is not an optmodel prune scores file (format {data.get('format')}).")
    what = shape_difference(data["shape"], shape)
    if what:
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
