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

MANIFEST_NAME = "optmodel.json"
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


def read_manifest(run_dir: Path) -> Dict[str, Any]:
    """optmodel.json of `run_dir`, its outputs resolved against where the dir is now."""
    with open(Path(run_dir) / MANIFEST_NAME) as f:
        data = json.load(f)
    return with_resolved_outputs(data, run_dir)


# --- paths inside a run dir: recorded relative to it, so a moved or copied dir loads its own files
def relative_outputs(outputs: Dict[str, Any], run_dir: Path) -> Dict[str, Any]:
    """`outputs` with every absolute path inside `run_dir` made relative to it."""
    root = Path(run_dir).resolve()
    relative = {}
    for key, value in outputs.items():
        if isinstance(value, str) and value and os.sep in value:  # a path (not `hf`, `bfloat16`)
            try:
                value = str(Path(value).resolve().relative_to(root))
            except ValueError:
                pass  # outside the run dir (a checkpoint, another run): kept as given
        relative[key] = value
    return relative


def with_resolved_outputs(manifest: Dict[str, Any], run_dir: Path) -> Dict[str, Any]:
    """The manifest with outputs as absolute paths under `run_dir`, wherever it is now.

    Relative values name files of the run dir when such a file exists (others, like
    `export_format: hf`, are not paths). Manifests written before paths were relative hold
    absolute ones: those inside the dir the run was made in (.hydra/hydra.yaml or
    config.yaml say which) are moved under `run_dir` too."""
    run_dir = Path(run_dir).expanduser().absolute()
    made_in: list = []  # looked up once, when an absolute path needs it

    def resolve(outputs):
        if not isinstance(outputs, dict):
            return outputs
        resolved = {}
        for key, value in outputs.items():
            if isinstance(value, str) and value:
                if not os.path.isabs(value):
                    if (run_dir / value).exists():
                        value = str(run_dir / value)
                else:
                    made_in[:] = made_in or [_made_in(run_dir) or ""]
                    if made_in[0] and Path(value).is_relative_to(made_in[0]):
                        value = str(run_dir / Path(value).relative_to(made_in[0]))
            resolved[key] = value
        return resolved

    if "outputs" in manifest:
        manifest = {**manifest, "outputs": resolve(manifest["outputs"])}
    if isinstance(manifest.get("steps"), dict):  # task=pipeline: each step's outputs
        manifest["steps"] = {name: {**step, "outputs": resolve(step.get("outputs"))} if isinstance(step, dict) else step
                             for name, step in manifest["steps"].items()}
    return manifest


def _made_in(run_dir: Path) -> str | None:
    """The dir an older run wrote its absolute paths under."""
    import yaml

    for name, keys in ((".hydra/hydra.yaml", ("hydra", "runtime", "output_dir")), ("config.yaml", ("run", "output_dir"))):
        try:
            value = yaml.safe_load((run_dir / name).read_text())
            for key in keys:
                value = value[key]
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
            continue
        if isinstance(value, str) and value:
            return value
    return None
