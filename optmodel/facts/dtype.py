"""`backend.dtype=auto`: which compute dtype a run gets (light: no torch import).

- On a GPU: the checkpoint's own dtype (config.json `dtype` / `torch_dtype`, else `model.dtype`),
  so a bf16 checkpoint is held in bf16 (Qwen3-8B: 16 GB, not 32).
- On CPU: float32, unless the CPU has AMX-BF16 (`amx_bf16` in /proc/cpuinfo: Sapphire Rapids and
  later) and the checkpoint is bf16. Without AMX, PyTorch's CPU bf16 matmuls are emulated or
  run on AVX512-BF16 dot products only, slower than float32 and less exact, so float32 wins; a
  float16 checkpoint computes in float32 on every CPU (no fast fp16 CPU kernels).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from optmodel.facts.checkpoint import resolve_checkpoint
from optmodel.facts.machine import runs_on_cpu

AUTO = "auto"
CPUINFO = Path("/proc/cpuinfo")


def checkpoint_dtype(model_cfg, path: Optional[Path] = None) -> str:
    """The dtype the checkpoint's weights are stored in."""
    path = Path(path) if path is not None else resolve_checkpoint(model_cfg)
    if path is not None and (path / "config.json").is_file():
        with open(path / "config.json") as f:
            config = json.load(f)
        stored = config.get("dtype") or config.get("torch_dtype")
        if stored in ("float32", "bfloat16", "float16"):
            return stored
    return str(model_cfg.get("dtype") or "float32")


def cpu_has_fast_bf16(cpuinfo: Optional[Path] = None) -> bool:
    """True when the CPU has AMX-BF16 tiles (oneDNN's fast bf16 matmul)."""
    try:
        text = (cpuinfo or CPUINFO).read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "amx_bf16" in line.split() for line in text.splitlines())


def compute_dtype(backend_cfg, model_cfg, device_type: str, path: Optional[Path] = None) -> str:
    """backend.dtype, with `auto` resolved for a run on `device_type` (cpu | cuda)."""
    if backend_cfg.dtype != AUTO:
        return str(backend_cfg.dtype)
    stored = checkpoint_dtype(model_cfg, path)
    if device_type == "cuda":
        return stored
    return "bfloat16" if stored == "bfloat16" and cpu_has_fast_bf16() else "float32"


def expected_device(backend_cfg) -> str:
    """The device a run will get, known without torch (validation): cpu | cuda."""
    return "cpu" if runs_on_cpu(backend_cfg) else "cuda"
