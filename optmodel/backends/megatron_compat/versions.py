"""Which of the two tested library sets this process runs: the adaptations beside this module
key their version-specific parts on these answers, so nothing else asks a version.

pinned  (Python 3.11): nvidia-modelopt 0.46.1, megatron-core 0.16.1
current (Python 3.12): nvidia-modelopt 0.47.0, megatron-core 0.19.2
"""

from __future__ import annotations

import functools
import importlib.metadata
import re


@functools.lru_cache(maxsize=None)
def release(package: str) -> tuple[int, ...]:
    """(major, minor, patch) of an installed distribution; () when it is not installed."""
    try:
        text = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ()
    parts = []
    for piece in text.split(".")[:3]:
        digits = re.match(r"\d+", piece)  # "0rc1" -> 0
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def modelopt_at_least(*version: int) -> bool:
    return release("nvidia-modelopt") >= version


def megatron_core_at_least(*version: int) -> bool:
    return release("megatron-core") >= version
