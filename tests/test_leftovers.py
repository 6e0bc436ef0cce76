"""What a run leaves in its dir whatever way it ends: no lock, no temp file, paths that
still resolve after the dir moves."""

from __future__ import annotations

import os
import signal

import pytest

from optmodel.claim import LOCK_NAME, claim_run_dir
from optmodel.config.errors import ConfigError
from optmodel.launch import signals
from optmodel.manifest import atomic_file, atomic_write_text


def test_the_lock_goes_with_the_run_and_the_dir_can_be_claimed_again(tmp_path):
    held = claim_run_dir(tmp_path, "quantize")
    assert (tmp_path / LOCK_NAME).is_file()
    with pytest.raises(ConfigError, match="is in use by a run that is still going"):
        claim_run_dir(tmp_path, "quantize")
    held.release()
    assert not (tmp_path / LOCK_NAME).exists()
    claim_run_dir(tmp_path, "quantize").release()
    assert os.listdir(tmp_path) == []


def test_a_signal_inside_an_atomic_write_leaves_no_temp_file(tmp_path):
    """Manifest updates, config.yaml and prune scores all write through atomic_file."""
    previous = signals.install()
    try:
        with pytest.raises(signals.Terminated), atomic_file(tmp_path / "optmodel.json") as tmp:
            tmp.write_text('{"status": "runn')  # half written when the kill lands
            signal.raise_signal(signal.SIGTERM)
    finally:
        signals.restore(previous)
    assert os.listdir(tmp_path) == []
    atomic_write_text(tmp_path / "optmodel.json", "{}")
    assert os.listdir(tmp_path) == ["optmodel.json"]
