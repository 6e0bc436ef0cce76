"""ModelOpt PTQ recipes named by `task.recipe`: found and checked from their YAML alone,
without importing ModelOpt (validation stays light)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from optmodel.facts.library_sets import modelopt_lacks


def resolve_recipe_path(recipe: str) -> Optional[Path]:
    """A recipe file: a filesystem path, or a name inside ModelOpt's built-in recipe library
    (e.g. general/ptq/fp8_default-kv_fp8). Imports only the recipe data package."""
    import importlib.util

    candidates = [Path(recipe)]
    spec = importlib.util.find_spec("modelopt_recipes")
    if spec and spec.submodule_search_locations:
        root = Path(list(spec.submodule_search_locations)[0])
        candidates.append(root / recipe)
    for base in candidates:
        for suffix in ("", ".yaml", ".yml"):
            path = base.with_name(base.name + suffix)
            if path.is_file():
                return path
    return None


def recipe_problems(recipe: str) -> List[str]:
    """Why `task.recipe` cannot drive a PTQ run, read from the YAML without importing ModelOpt."""
    import yaml

    path = resolve_recipe_path(recipe)
    if path is None:
        return [
            f"task.recipe: {recipe!r} is neither a file nor a ModelOpt built-in recipe. "
            f"Fix: a path to a PTQ recipe YAML, or a built-in name such as general/ptq/fp8_default-kv_fp8."
        ]
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        return [f"task.recipe: {path} is not valid YAML ({str(err).splitlines()[0]})."]
    kind = (raw.get("metadata") or {}).get("recipe_type") if isinstance(raw, dict) else None
    if kind != "ptq" or "quantize" not in raw:
        return [
            f"task.recipe: {path} is not a PTQ recipe (metadata.recipe_type={kind!r}, needs 'ptq' and a "
            f"'quantize' section). Fix: point task.recipe at a PTQ recipe, e.g. general/ptq/fp8_default-kv_fp8."
        ]

    algorithm = (raw.get("quantize") or {}).get("algorithm") if isinstance(raw.get("quantize"), dict) else None
    method = algorithm.get("method") if isinstance(algorithm, dict) else algorithm
    lacking = modelopt_lacks(method, f"task.recipe ({path})") if isinstance(method, str) else None
    return [lacking] if lacking else []
