"""Claiming a run dir before a run writes anything into it.

- An exclusive lock (`.optmodel.lock`, flock) for the run's lifetime: a second run started
  into the same dir fails at once, naming the pid and host that hold it. The lock file is
  removed when the run ends.
- A dir that holds another run's manifest (completed, running, failed) is refused, with
  both fixes (a new dir, or run.resume=true to continue an unfinished run of the same task),
  so a run never rewrites a record it did not create. Sweep jobs re-running a failed job,
  and a requeued Slurm job continuing its own run, are the launcher's to allow.
- Partial outputs left by dead processes (`.<name>.partial-<pid>`, anywhere in the dir) are removed.

A manifest that says `running` while its process is gone (a SIGKILL, a lost node) reads
as `interrupted` wherever runs are read back (run.load, sweep resume, summaries).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
from pathlib import Path

from optmodel.facts.errors import ConfigError
from optmodel.facts.rundir import MANIFEST_NAME, effective_status, pid_alive

LOCK_NAME = ".optmodel.lock"
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)$")  # manifest.atomic_dir
_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")  # manifest.atomic_write_text


def clean_stale_partials(run_dir: Path) -> list:
    """Remove `.<name>.partial-<pid>` dirs and `.<name>.tmp-<pid>` files whose pid is dead on
    this host, anywhere in the run dir (a training checkpoint's partial sits in a subfolder);
    returns their paths relative to `run_dir`."""
    run_dir = Path(run_dir)
    removed = []
    for folder, dirs, files in os.walk(run_dir):
        for name in [*dirs, *files]:
            match = _PARTIAL.match(name) or _TEMP.match(name)
            if match and pid_alive(int(match["pid"]), socket.gethostname()) is False:
                entry = Path(folder) / name
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                removed.append(str(entry.relative_to(run_dir)))
        dirs[:] = [d for d in dirs if not _PARTIAL.match(d)]  # a live partial is its writer's
    return removed


class RunDirClaim:
    """The held lock of one run dir; released when the run ends (or its process dies)."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir, self._fd = run_dir, fd

    def release(self) -> None:
        """Remove the lock file, then unlock: a finished run dir holds no `.optmodel.lock`.
        A process that opened the old file meanwhile finds it unlinked and retries (_lock)."""
        if self._fd is not None:
            (self.run_dir / LOCK_NAME).unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _lock(run_dir: Path) -> int:
    path = run_dir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = path.read_text().strip() or "another process"
            except OSError:
                holder = "another process"
            os.close(fd)
            raise ConfigError([
                f"run.output_dir: {run_dir} is in use by a run that is still going ({holder}); two runs into one dir "
                f"would overwrite each other. Fix: wait for it to finish, or run.output_dir=<another dir>."
            ]) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # locked a file its holder removed on release: lock the current one
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def claim_run_dir(run_dir: Path, task: str, resume: bool = False, relaunch: bool = False,
                  resumable: bool = False) -> RunDirClaim:
    """Lock `run_dir` and check that this run may write there (ConfigError when not).

    resume: the user asked to continue an unfinished run of the same task in this dir.
    relaunch: the launcher re-runs its own job here (a failed sweep job, a requeued job).
    resumable: the task can continue an unfinished run (its spec says), offered in the fix."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = _lock(run_dir)
    try:
        _check_earlier_run(run_dir, task, resume, relaunch, resumable)
    except BaseException:
        RunDirClaim(run_dir, fd).release()
        raise
    clean_stale_partials(run_dir)
    return RunDirClaim(run_dir, fd)


def _check_earlier_run(run_dir: Path, task: str, resume: bool, relaunch: bool, resumable: bool) -> None:
    import json

    path = run_dir / MANIFEST_NAME
    if not path.is_file():
        return
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = {"status": "unreadable", "task": "?"}
    status = effective_status(earlier)
    unfinished = status in ("failed", "interrupted", "requeued", "unreadable")
    if status == "requeued" or (relaunch and unfinished) or (resume and unfinished and earlier.get("task") == task):
        return
    what = f"{'an' if str(status)[:1] in 'aeiou' else 'a'} {status} {earlier.get('task')} run of {earlier.get('model')} (started {earlier.get('started_at')})"
    if resume and status == "completed":
        fix = "a completed run has nothing to continue: run.output_dir=<a new dir>, or load it with run.load=" + str(run_dir)
    elif resume:
        fix = f"run.resume continues a run of the same task (that one is task={earlier.get('task')}): run.output_dir=<a new dir>"
    else:
        fix = "run.output_dir=<a new dir> (or leave run.output_dir unset: a fresh timestamped dir)"
        if resumable:
            fix += ", or run.resume=true to continue an unfinished run of the same task there"
    raise ConfigError([f"run.output_dir: {run_dir} already holds {what}; its record and outputs are kept. Fix: {fix}."])


def probe_run_dir(run_dir: Path, task: str, resume: bool = False, resumable: bool = False) -> list:
    """The problems claim_run_dir would raise, found without keeping the lock: the command
    line checks run.output_dir before Hydra writes its .hydra/ and log into that dir."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    try:
        claim_run_dir(run_dir, task, resume=resume, resumable=resumable).release()
    except ConfigError as err:
        return err.problems
    return []
