"""Is a run's megatron distributed checkpoint whole? Checked before any model is built.

`optmodel.facts.rundir` checks the file listing without torch (validation); `preflight` reads
the checkpoint's own index (torch.distributed.checkpoint metadata: which file holds which
bytes) and compares it with the files' sizes, so a shard cut short by an interrupted copy
is refused with the field to fix, not met as an unpickling error after the model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

from optmodel.facts.errors import ConfigError
from optmodel.facts.rundir import is_distributed_checkpoint, read_origin, saved_model_path


def truncation_problems(ckpt_dir: Path, field: str = "run.load") -> List[str]:
    """One sentence per shard file that is shorter than the checkpoint's index says."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        storage = FileSystemReader(str(ckpt_dir)).read_metadata().storage_data
    except Exception as err:  # an unreadable index is as bad as a missing one
        return [f"{field}: the index of {ckpt_dir} (.metadata) is unreadable ({type(err).__name__}: {err}); the "
                f"checkpoint is damaged. Fix: copy it again from where it was written, or re-run that run."]
    needed = {}
    for info in storage.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    problems = []
    for name, size in sorted(needed.items()):
        have = (ckpt_dir / name).stat().st_size if (ckpt_dir / name).is_file() else None
        if have is None or have < size:
            state = "is missing" if have is None else f"holds {have} of its {size} bytes"
            problems.append(f"{field}: {ckpt_dir / name} {state}: the distributed checkpoint is truncated. Fix: copy "
                            f"it again from where it was written, or re-run that run.")
    return problems


def preflight(cfg) -> None:
    """ConfigError (exit 2) when run.load's saved model is a truncated distributed checkpoint."""
    saved = saved_model_path(read_origin(cfg.run.get("load")) or {})
    if saved is not None and is_distributed_checkpoint(saved):
        problems = truncation_problems(saved)
        if problems:
            raise ConfigError(problems)
