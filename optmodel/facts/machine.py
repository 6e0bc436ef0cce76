"""What this machine offers: the one place that answers device and Transformer-Engine
questions. Decided without importing torch at import time (validation stays light)."""

from __future__ import annotations

import importlib
import importlib.util
import os


def cuda_visible() -> bool:
    """Whether a GPU is usable: checks the driver's device nodes and CUDA_VISIBLE_DEVICES."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


def device_type(backend) -> str:
    """backend.device resolved: "cuda" or "cpu" (auto: cuda when a GPU is visible)."""
    if backend.device == "auto":
        return "cuda" if cuda_visible() else "cpu"
    return str(backend.device)


def runs_on_cpu(backend) -> bool:
    """backend.device resolved: cpu, or auto with no GPU visible."""
    return device_type(backend) == "cpu"


def torch_device(backend):
    """The torch device the run computes on (`device_type`), checked against what torch can use."""
    import torch

    kind = device_type(backend)
    if kind == "cuda" and not torch.cuda.is_available():
        how = "backend.device=cuda" if backend.device == "cuda" else "backend.device=auto found a GPU, but"
        raise RuntimeError(f"{how} torch cannot use CUDA here (no usable device, or a CPU-only torch build). "
                           f"Fix: backend.device=cpu.")
    return torch.device(kind)


def transformer_engine_installed() -> bool:
    """Whether the transformer_engine package is installed (nothing is imported)."""
    return importlib.util.find_spec("transformer_engine") is not None


def transformer_engine_usable() -> bool:
    """Whether Transformer-Engine's torch layers import (installed, and its CUDA libraries load)."""
    if not transformer_engine_installed():
        return False
    try:
        importlib.import_module("transformer_engine.pytorch")  # imports the package first
    except Exception:  # ImportError, or TE present but its CUDA libraries are not
        return False
    return True
