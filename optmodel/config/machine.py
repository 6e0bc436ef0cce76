"""What this machine offers, decided without importing torch (validation stays light)."""

from __future__ import annotations

import importlib.util
import os


def cuda_visible() -> bool:
    """Whether a GPU is usable: checks the driver's device nodes and CUDA_VISIBLE_DEVICES."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


def runs_on_cpu(backend) -> bool:
    """backend.device resolved: cpu, or auto with no GPU visible."""
    return backend.device == "cpu" or (backend.device == "auto" and not cuda_visible())


def transformer_engine_installed() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None
