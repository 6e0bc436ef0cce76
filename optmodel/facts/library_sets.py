"""The two tested library sets and what differs between them that a run dir shows. Stdlib
only: validation asks it before anything heavy is imported, and the adaptations in
optmodel/backends/megatron_compat key their version-specific parts on it.

pinned  (Python 3.11, constraints.txt):         nvidia-modelopt 0.46.1, megatron-core 0.16.1
current (Python 3.12, constraints-current.txt): nvidia-modelopt 0.47.0, megatron-core 0.19.2

ModelOpt 0.47 made per-expert quantizers the default for Transformer-Engine grouped-GEMM MoE
layers; optmodel builds experts as per-expert linears (`moe_grouped_gemm=False`,
backends/megatron_spec.py) on both sets, so its quantized run dirs hold no grouped quantizers
and that change does not touch them. What does: the checkpoint layout below.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import re
from pathlib import Path
from typing import Optional

INSTALL_HINT = {
    "pinned": "Python 3.11, pip install -e . -c constraints.txt",
    "current": "Python 3.12, pip install -e . -c constraints-current.txt",
}


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


# Names ModelOpt knows from a release on (a recipe written for the current set, run under the
# pinned one: 0.46.1 loads the recipe, then mtq.quantize fails after the model is loaded, "Algorithm
# nvfp4_act_headroom not found in CalibrateModeRegistry"): name -> (first release, what it is)
MODELOPT_ADDED = {
    "nvfp4_act_headroom": ((0, 47), "calibration algorithm (quantize.algorithm.method)"),
}


def modelopt_lacks(name: str, field: str) -> Optional[str]:
    """Why the installed ModelOpt cannot run `name`, one of MODELOPT_ADDED; None when it can."""
    if name not in MODELOPT_ADDED:
        return None
    first, what = MODELOPT_ADDED[name]
    if modelopt_at_least(*first):
        return None
    running = ".".join(map(str, release("nvidia-modelopt"))) or "not installed"
    since = ".".join(map(str, first))
    return (f"{field}: the {what} {name!r} is new in ModelOpt {since}; ModelOpt {running} here does not have it. "
            f"Fix: use the current set ({INSTALL_HINT['current']}), or a recipe without it.")


def distributed_checkpoint_format_problem(ckpt: Path, field: str) -> Optional[str]:
    """A megatron distributed checkpoint this process's megatron-core cannot read, by format.

    megatron-core 0.19 writes a checkpoint's common (non-tensor) state as a sharded object
    inside its torch_dist files; up to 0.18 it went to common.pt, named in metadata.json as
    `common_backend`. 0.19 reads both; 0.16 (the pinned set) reads only common.pt and fails
    on the newer layout mid-load. ModelOpt's modelopt_state/ beside the weights follows the
    same layout, so a quantized checkpoint moves with it."""
    if megatron_core_at_least(0, 19):
        return None
    try:
        metadata = json.loads((Path(ckpt) / "metadata.json").read_text())
    except (OSError, ValueError):
        return None  # not this check's business: the shard checks report a damaged checkpoint
    if "common_backend" in metadata or (Path(ckpt) / "common.pt").is_file():
        return None
    running = ".".join(map(str, release("megatron-core"))) or "not installed"
    return (f"{field}: {ckpt} was written by megatron-core >= 0.19 (its common state inside the sharded files, "
            f"no common.pt), which megatron-core {running} here cannot read. Fix: load it under the current "
            f"set ({INSTALL_HINT['current']}), or export it there (task=export) and load the Hugging Face export "
            f"with model.checkpoint=<its export dir>.")
