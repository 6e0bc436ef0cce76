"""Termination of a run (scancel, preemption, Ctrl-C, `kill`) that no library can swallow.

SIGTERM, SIGINT and Slurm's USR2 (time limit near) raise `Terminated`, a BaseException, so a
library's `try / except Exception` around the interrupted line does not catch it. The
handler also records the request, and the run checks `raise_if_requested()` before it
writes `completed`: even an `except BaseException` that drops the signal cannot make a
cancelled run read as completed. USR2 inside resumable work (preemption.resumable) goes to
submitit's checkpoint-and-requeue handler instead, as before.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Dict, Iterator, Optional

from optmodel.launch import preemption

_requested: Optional[int] = None
_deferred = False  # while a run records how it ended: signals are noted, not raised
SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR2") if hasattr(signal, name))


class Terminated(BaseException):
    """The run was asked to stop (signal): unwinds like an error past `except Exception`, so
    partial outputs are removed and the manifest says failed instead of staying `running`."""


def _handler(signum: int, frame: Any) -> None:
    global _requested
    usr2 = getattr(signal, "SIGUSR2", None)
    if signum == usr2 and preemption.is_resumable() and preemption.submitit_handler() is not None:
        return preemption.submitit_handler()(signum, frame)  # save and requeue: not a termination
    _requested = signum
    if _deferred:
        return
    raise Terminated(f"terminated by signal {signum} ({signal.Signals(signum).name})")


def install() -> Optional[Dict[int, Any]]:
    """Route the termination signals to `Terminated`; returns the handlers to restore
    (None outside the main thread, where Python cannot set handlers)."""
    global _requested
    _requested = None
    if threading.current_thread() is not threading.main_thread():
        return None
    return {sig: signal.signal(sig, _handler) for sig in SIGNALS}


def restore(previous: Optional[Dict[int, Any]]) -> None:
    for sig, handler in (previous or {}).items():
        signal.signal(sig, handler)


def requested() -> Optional[int]:
    """The signal that asked this run to stop, None when none did."""
    return _requested


def raise_if_requested() -> None:
    """Called before a run records `completed`: a swallowed termination still fails it."""
    if _requested is not None:
        raise Terminated(f"terminated by signal {_requested} ({signal.Signals(_requested).name}); "
                         f"the task went on after it, so its results are not trusted")


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Note termination signals without raising while the block runs (recording a failure,
    closing the tracker): a second kill does not leave the manifest half-written."""
    global _deferred
    previous, _deferred = _deferred, True
    try:
        yield
    finally:
        _deferred = previous


def interruption(err: BaseException) -> Optional[str]:
    """How a stop that was asked for reads in the manifest and the log; None for an error."""
    if isinstance(err, KeyboardInterrupt) or (isinstance(err, Terminated) and _requested == signal.SIGINT):
        return "interrupted (Ctrl-C, SIGINT)"
    if isinstance(err, Terminated) and _requested is not None:
        return f"interrupted (signal {_requested}, {signal.Signals(_requested).name}: kill, scancel or preemption)"
    return None
