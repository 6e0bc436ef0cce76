"""The run directory's manifest (optmodel.json) and atomic writes.

A run dir is complete only when its manifest says `"status": "completed"`; outputs are
built under a hidden partial name and renamed into place, so a killed run never leaves a
checkpoint that looks finished.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import socket
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator

from optmodel.distributed import barrier, broadcast_from_rank0, is_rank0
from optmodel.facts.rundir import MANIFEST_NAME

VERSIONED_PACKAGES = (
    "optmodel", "torch", "transformers", "nvidia-modelopt", "megatron-core",
    "hydra-core", "omegaconf", "lm_eval", "wandb",
)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path` to write; renamed to `path` on success, removed on any
    failure (a signal included), so neither a half file nor a stray temp file is left."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_dir(final: Path, all_ranks: bool = False) -> Iterator[Path]:
    """Yield a partial directory beside `final` (`.<name>.partial-<pid>`); on success its files
    are synced to disk and it is renamed to `final`. On an exception (Ctrl-C included) it is
    removed; a kill leaves it behind under its pid, for `claim.clean_stale_partials` to remove.

    all_ranks: every rank of the torch.distributed world writes into the one partial dir
    (named after rank 0's pid); rank 0 makes it and renames it once every rank is done.
    An existing `final` is refused rather than overwritten: it belongs to another run.
    """
    final = Path(final)
    if final.exists():
        raise FileExistsError(f"{final} already exists; refusing to overwrite another run's output")
    rank0, pid = (is_rank0(), broadcast_from_rank0(os.getpid())) if all_ranks else (True, os.getpid())
    sync = barrier if all_ranks else (lambda: None)
    partial = final.with_name(f".{final.name}.partial-{pid}")
    if rank0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    sync()
    try:
        yield partial
        sync()  # every rank's files are written
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if rank0:
        _fsync_tree(partial)
        os.replace(partial, final)
        _fsync_dir(final.parent)
    sync()  # no rank goes on before `final` exists


def _fsync_tree(root: Path) -> None:
    """The files and folders under `root` on disk, before a rename makes them look complete."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def package_versions() -> Dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """optmodel.json of one run dir, rewritten atomically at every update."""

    def __init__(self, run_dir: Path, task: str, model: str, input_checkpoint: str | None, persist: bool = True):
        self.path = Path(run_dir) / MANIFEST_NAME
        self.persist = persist  # False on ranks other than 0: one writer per run dir
        self.data: Dict[str, Any] = {
            "task": task,
            "model": model,
            "input_checkpoint": input_checkpoint,
            "status": "running",
            "pid": os.getpid(),  # with host: a later reader tells a killed run (interrupted) from a live one
            "host": socket.gethostname(),
            "started_at": now(),
            "finished_at": None,
            "architecture": None,
            "quantization": None,
            "metrics": {},
            "outputs": {},
            "versions": package_versions(),
            "error": None,
        }
        self.write()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.write()

    def finish(self, status: str, error: str | None = None) -> None:
        self.update(status=status, error=error, finished_at=now())

    def write(self) -> None:
        if not self.persist:
            return
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")
