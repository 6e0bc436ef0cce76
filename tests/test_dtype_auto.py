"""backend.dtype=auto picks what the README says: the checkpoint's dtype on a GPU; on CPU
float32 unless the CPU has AMX-BF16 and the checkpoint is bf16."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from optmodel.facts import dtype as auto_dtype

from conftest import compose_cfg

FLAGS_AMX = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
FLAGS_AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"


def checkpoint(tmp_path, stored):
    (tmp_path / "config.json").write_text(json.dumps({"dtype": stored}))
    return tmp_path


@pytest.mark.parametrize("stored,device,flags,expected", [
    ("bfloat16", "cuda", FLAGS_AVX512_BF16, "bfloat16"),
    ("float16", "cuda", FLAGS_AMX, "float16"),
    ("float32", "cuda", FLAGS_AMX, "float32"),
    ("bfloat16", "cpu", FLAGS_AVX512_BF16, "float32"),  # AVX512-BF16 alone is not enough
    ("bfloat16", "cpu", FLAGS_AMX, "bfloat16"),
    ("float16", "cpu", FLAGS_AMX, "float32"),  # no fast fp16 CPU kernels
    ("float32", "cpu", FLAGS_AMX, "float32"),
])
def test_auto_follows_checkpoint_and_machine(tmp_path, monkeypatch, stored, device, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(flags)
    monkeypatch.setattr(auto_dtype, "CPUINFO", cpuinfo)
    (tmp_path / "ckpt").mkdir()
    ckpt = checkpoint(tmp_path / "ckpt", stored)
    backend = OmegaConf.create({"dtype": "auto", "device": device})
    model = OmegaConf.create({"dtype": "bfloat16", "checkpoint": str(ckpt), "tiny": False})
    assert auto_dtype.compute_dtype(backend, model, device) == expected


def test_explicit_dtype_is_kept(tmp_path):
    model = OmegaConf.create({"dtype": "bfloat16", "checkpoint": str(checkpoint(tmp_path, "bfloat16")), "tiny": False})
    assert auto_dtype.compute_dtype(OmegaConf.create({"dtype": "float16"}), model, "cpu") == "float16"


def test_default_is_auto_and_this_machine_loads_what_it_says():
    from optmodel.backends import hf

    cfg = compose_cfg("backend.device=cpu")
    assert cfg.backend.dtype == "auto"
    handle = hf.load(cfg)
    stored = json.loads((handle.source / "config.json").read_text())["dtype"]
    assert stored == "bfloat16"  # the bundled tiny models ship bf16
    want = "bfloat16" if "amx_bf16" in open("/proc/cpuinfo").read() else "float32"
    assert str(next(handle.model.parameters()).dtype) == f"torch.{want}"


def test_unknown_dtype_is_refused_naming_the_field():
    from optmodel.config.validate import ConfigError
    from optmodel.checked import validate

    with pytest.raises(ConfigError, match="backend.dtype"):
        validate(compose_cfg("backend.dtype=fp8"))
