"""The names of lm-eval's built-in tasks, cached per lm-eval version.

Indexing lm-eval's task tree (thousands of YAML files) takes tens of seconds on a busy
machine; a misspelt task name should be refused in about a second, before the model or
the task index loads. The list is written once to $XDG_CACHE_HOME/optmodel/ and reused
until lm-eval's version changes.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Iterable, List, Optional

from optmodel.manifest import atomic_write_text


def cache_file() -> Path:
    version = importlib.metadata.version("lm_eval")
    root = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return root / "optmodel" / f"lm_eval-{version}-tasks.json"


def cached_task_names() -> Optional[List[str]]:
    """The built-in task, group and tag names of this lm-eval version, or None before the
    first index was stored."""
    try:
        names = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return None
    return names if isinstance(names, list) and names else None


def store_task_names(names: Iterable[str]) -> None:
    """Keep the names of an index of the built-in tasks only (no include paths)."""
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_file(), json.dumps(sorted(names)))
    except OSError:
        pass  # a read-only home: index each time


def close_names(name: str, known: Iterable[str]) -> List[str]:
    """Up to three names that look like `name` (near spellings only, not any shared prefix)."""
    known = list(known)
    return difflib.get_close_matches(name, known, n=3, cutoff=0.75) or difflib.get_close_matches(name, known, n=1, cutoff=0.6)
