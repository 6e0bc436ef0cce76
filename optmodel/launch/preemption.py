"""Slurm timeout / preemption for resumable tasks, through submitit's checkpoint protocol.

submitit calls the submitted callable's `checkpoint(*args)` from its signal handler
(USR2 before the time limit; optmodel's launchers route SIGTERM there too for resumable
runs) and requeues the job when it returns a `DelayedSubmission`. A task opts in by
running its loop inside `resumable(save)`: on preemption `save()` writes the task's state
into its run dir, the job is requeued with the same arguments, and the requeued job finds
that state and continues. A task that never registered is not requeued: its manifest says
failed, like any other interrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Callable, Iterator, List, Optional

log = logging.getLogger("optmodel")

_save_hooks: List[Callable[[], None]] = []
_requeued = False
_submitit_handler: Optional[Callable] = None


def remember_submitit_handler(handler: Any) -> None:
    """The launcher records submitit's checkpoint-and-requeue signal handler of this job."""
    global _submitit_handler
    _submitit_handler = handler if callable(handler) else None


@contextlib.contextmanager
def resumable(save: Callable[[], None]) -> Iterator[None]:
    """Declare the enclosed work resumable; `save()` must make a requeued run continue.

    Under a submitit launcher, SIGTERM (Slurm preemption) then goes to submitit's
    checkpoint-and-requeue handler too, instead of failing the run.
    """
    _save_hooks.append(save)
    route = _submitit_handler is not None and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _submitit_handler) if route else None
    try:
        yield
    finally:
        _save_hooks.remove(save)
        if route:
            signal.signal(signal.SIGTERM, previous)


def submitit_handler() -> Optional[Callable]:
    return _submitit_handler


def is_resumable() -> bool:
    return bool(_save_hooks)


def was_requeued() -> bool:
    """True once this process saved its state for a requeue (the run is not failed)."""
    return _requeued


def checkpoint_submission(function: Any, *args: Any, **kwargs: Any) -> Optional[Any]:
    """submitit's `checkpoint` hook: save and resubmit resumable work, else no requeue."""
    global _requeued
    import submitit

    if not _save_hooks:
        log.warning("preempted or timed out: this task is not resumable, so it is not requeued")
        return None
    for save in list(_save_hooks):
        save()
    _requeued = True
    log.warning("preempted or timed out: state saved, requeueing the job")
    return submitit.helpers.DelayedSubmission(function, *args, **kwargs)
