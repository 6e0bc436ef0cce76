"""launchers/vllm_eagle3_check.sh end to end: a fresh draft served by vLLM's CPU build at the
acceptance length task=validate measured (within 0.05). Minutes of training and serving, so it
runs only where vLLM's own venv is already installed (VLLM_VENV, default <repo>/.vllm-venv);
elsewhere it is skipped saying so (installing vLLM takes several GB)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("VLLM_VENV", ROOT / ".vllm-venv"))


def vllm_installed() -> bool:
    python = VENV / "bin" / "python"
    return python.is_file() and subprocess.run([str(python), "-c", "import vllm"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_vllm_serves_the_draft_at_validate_s_acceptance_length(tmp_path):
    if not vllm_installed():
        pytest.skip(f"vLLM's CPU build is not installed in {VENV} (launchers/vllm_eagle3_check.sh installs it: "
                    f"several GB, so the suite does not)")
    env = {**os.environ, "VLLM_VENV": str(VENV), "PYTHON": sys.executable}  # the script's 8 prompts x 48 tokens
    run = subprocess.run([str(ROOT / "launchers" / "vllm_eagle3_check.sh"), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "within 0.05" in run.stdout
