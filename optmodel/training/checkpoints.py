"""Resumable training checkpoints: transformers' `checkpoint-<step>` dirs, marked complete.

The Trainer writes a checkpoint directory in several steps (weights, optimizer, scheduler,
RNG, trainer state); a kill in between leaves a directory that looks like a checkpoint.
`CompleteMarker` writes `<checkpoint>/optmodel_complete` atomically once the Trainer has
finished it (its `on_save` event), and a resume only ever picks a marked checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import List, Optional

from transformers import TrainerCallback

from optmodel.manifest import atomic_write_text

log = logging.getLogger("optmodel")

COMPLETE_MARKER = "optmodel_complete"
CHECKPOINTS_DIR = "checkpoints"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(folder: Path) -> List[Path]:
    """checkpoint-<step> dirs of `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)))


def is_complete(checkpoint: Path) -> bool:
    return (Path(checkpoint) / COMPLETE_MARKER).is_file()


def last_complete_checkpoint(folder: Path) -> Optional[Path]:
    complete = [p for p in checkpoints(folder) if is_complete(p)]
    return complete[-1] if complete else None


def discard_incomplete(folder: Path) -> List[Path]:
    """Remove checkpoint dirs a kill left half-written; returns them."""
    removed = [p for p in checkpoints(folder) if not is_complete(p)]
    for p in removed:
        log.warning("removing incomplete training checkpoint %s (the run was killed while writing it)", p)
        shutil.rmtree(p, ignore_errors=True)
    return removed


def requeued_job() -> bool:
    """A Slurm job started again after preemption / timeout (its run dir holds the checkpoints)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


class CompleteMarker(TrainerCallback):
    """Marks each checkpoint complete after the Trainer wrote all of it."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if path.is_dir():
                atomic_write_text(path / COMPLETE_MARKER, f"{state.global_step}\n")
        return control
