"""The one error type of a config that cannot run, and close-match name checking.

A leaf module: everything that validates a config (the config package, task specs, data
and checkpoint checks) raises or returns problems in these terms.
"""

from __future__ import annotations

import difflib
from typing import Iterable, List, Optional


class ConfigError(ValueError):
    """A run config that cannot run; `problems` lists each reason."""

    def __init__(self, problems: List[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"optmodel config is not valid, found {len(self.problems)} problem(s):\n{lines}")

    def __reduce__(self):  # pickled across ranks / submitit jobs: rebuild from the problem list
        return (type(self), (self.problems,))


class MeasuredFailure(RuntimeError):
    """A run that did its work and failed a check on what it measured (a task's lower_bound):
    the command says so in one line, exit 1, no traceback; the manifest keeps the numbers."""


class AccuracyBelowBound(MeasuredFailure):
    """A `lower_bound` gate failed: the message has both numbers."""


def one_of(field: str, value, valid: Iterable[str]) -> Optional[str]:
    """A problem sentence when `value` is not a valid name, with close matches first."""
    valid = list(valid)
    if value in valid:
        return None
    close = difflib.get_close_matches(str(value), valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"{field}: unknown value {value!r}.{hint} Valid: {', '.join(valid)}."


def positive(field: str, value, minimum: int = 1) -> List[str]:
    """[problem] when an integer setting is below `minimum`."""
    return [f"{field}: must be >= {minimum}, got {value}."] if value < minimum else []
