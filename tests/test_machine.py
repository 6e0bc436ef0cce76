"""facts/machine.py is the one answer to "which device" and "is Transformer-Engine there":
validation and the backends read the same decision, without torch at import."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from optmodel.facts import machine


def backend(device: str):
    return OmegaConf.create({"device": device})


def test_auto_follows_the_visible_gpu_and_the_backend_builds_on_that_device(monkeypatch):
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert machine.device_type(backend("auto")) == "cpu" and machine.runs_on_cpu(backend("auto"))
    assert machine.torch_device(backend("auto")) == torch.device("cpu")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    visible = machine.cuda_visible()
    assert machine.device_type(backend("auto")) == ("cuda" if visible else "cpu")
    if visible == torch.cuda.is_available():  # where torch agrees with the driver nodes
        assert machine.torch_device(backend("auto")).type == machine.device_type(backend("auto"))


def test_cuda_that_torch_cannot_use_is_refused_with_the_fix():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a usable GPU is here")
    with pytest.raises(RuntimeError, match="backend.device=cuda .*Fix: backend.device=cpu"):
        machine.torch_device(backend("cuda"))


def test_machine_answers_without_importing_torch_or_transformer_engine():
    code = ("import sys; from optmodel.facts import machine; machine.transformer_engine_installed(); "
            "machine.runs_on_cpu(type('B', (), {'device': 'auto'})()); "
            "assert 'torch' not in sys.modules and 'transformer_engine' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
    if not machine.transformer_engine_installed():
        assert machine.transformer_engine_usable() is False
