"""A quiet terminal: library chatter goes to the run's optmodel.log, not the console.

During a run the terminal shows progress bars, optmodel's own lines and errors. What the
libraries print or log for debugging (Megatron-FSDP / Transformer-Engine / Apex fallbacks,
deepspeed's accelerator line, ModelOpt's banners, deprecation warnings) is written to the
log file only:
- Python warnings are routed through logging (`py.warnings`);
- the console handler passes only optmodel's records (but its per-metric lines, which are
  in the manifest) and any logger's errors;
- sys.stdout / sys.stderr pass a write through when optmodel or tqdm made it, and turn a
  library's print into a log record (file only).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, List

LIBRARY_LOGGER = "library"  # records of what libraries printed
METRICS_LOGGER = "optmodel.metrics"  # one line per metric: the manifest and summary have them

_PASS_MODULES = ("optmodel", "tqdm", "hydra", "__main__", "_pytest", "pytest")
# wandb (imported by transformers) wraps the write method of whatever sys.stdout is.
_INFRA_MODULES = ("optmodel.console", "logging", "warnings", "traceback", "contextlib", "codecs", "io", "_io",
                  "wandb.sdk.lib.console_capture")


class ConsoleFilter(logging.Filter):
    """optmodel's records (not per-metric ones) and every logger's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name == METRICS_LOGGER or record.name.startswith(METRICS_LOGGER + "."):
            return False
        return record.name == "optmodel" or record.name.startswith("optmodel.")


def _writer_module(depth: int = 2) -> str:
    """Module of the code that asked for this write (infrastructure frames skipped); "tqdm"
    when a progress bar is anywhere on the stack."""
    frame = sys._getframe(depth)
    first = None
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("tqdm"):
            return "tqdm"
        if first is None and not any(name == m or name.startswith(m + ".") for m in _INFRA_MODULES):
            first = name
        frame = frame.f_back
    return first or ""


class LibraryOutputFilter:
    """A stand-in for sys.stdout / sys.stderr: optmodel's and tqdm's writes go through; what
    a library writes becomes one log record per line (handled by the file handler only)."""

    def __init__(self, stream, level: int = logging.INFO):
        self.stream = stream
        self.level = level
        self.pending = ""
        self.log = logging.getLogger(LIBRARY_LOGGER)

    def write(self, text: str) -> int:
        module = _writer_module()
        if any(module == m or module.startswith(m + ".") for m in _PASS_MODULES):
            return self.stream.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.strip():
                self.log.log(self.level, line.rstrip("\r"))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ... of the real stream
        return getattr(self.stream, name)


def _console_handlers() -> List[logging.Handler]:
    return [h for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
            and getattr(h, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)]


@contextlib.contextmanager
def quiet_console() -> Iterator[None]:
    """For the duration of a run (the root logger's file handler, Hydra's optmodel.log,
    receives everything the console is spared)."""
    console = _console_handlers()
    console_filter = ConsoleFilter()
    for handler in console:
        handler.addFilter(console_filter)
    logging.captureWarnings(True)
    logging.getLogger(LIBRARY_LOGGER).setLevel(logging.INFO)
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = LibraryOutputFilter(stdout), LibraryOutputFilter(stderr, logging.WARNING)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        logging.captureWarnings(False)
        for handler in console:
            handler.removeFilter(console_filter)


def rate(value: float, unit: str) -> str:
    """A throughput for a summary line: 3 significant digits below 100 (a CPU run's 0.42
    tokens/s is not "0 tokens/s"), whole numbers with separators above."""
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
