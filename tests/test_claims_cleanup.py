"""Partial outputs are removed on every way a run stops: an error, Ctrl-C (KeyboardInterrupt)
and SystemExit (a SIGTERM handler's exit, a requeue) — in process, no timing (issue 20)."""

from __future__ import annotations

import pytest

from optmodel.manifest import atomic_dir


@pytest.mark.parametrize("stop", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(143)],
                         ids=["error", "ctrl-c", "system-exit"])
def test_atomic_dir_leaves_nothing_when_stopped(stop, tmp_path):
    with pytest.raises(type(stop)):
        with atomic_dir(tmp_path / "export") as partial:
            (partial / "model.safetensors").write_bytes(b"half")
            assert partial.is_dir() and partial.name.startswith(".export.partial-")
            raise stop
    assert list(tmp_path.iterdir()) == []
