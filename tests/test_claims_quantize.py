"""Quantize claims a user relies on: a quantizer that calibration never reached fails the run
(nothing exported), auto-quantize keeps to the formats it was given and leaves the disabled
layers alone, and the vllm_fq export holds the fake-quantized weights, not the originals."""

from __future__ import annotations

import pytest
import torch

from optmodel.facts.rundir import read_manifest
from optmodel.run import execute

from conftest import compose_cfg

TINY = ("data.num_samples=2", "data.seq_len=64", "task.perplexity=false")


def test_a_quantizer_calibration_never_reached_fails_the_run_and_exports_nothing(tmp_path, monkeypatch):
    from optmodel.backends.hf import HFHandle
    from optmodel.quantization.checks import QuantizeError

    real = HFHandle.forward_loop

    def loop_around_the_last_mlp(self, batches, desc="calibrate"):
        """Calibration that never reaches the last decoder layer's MLP (its output stands in zeros)."""
        loop = real(self, batches, desc)

        def run(model):
            mlp = model.model.layers[-1].mlp
            mlp.forward = lambda hidden: torch.zeros_like(hidden)
            try:
                loop(model)
            finally:
                del mlp.forward
        return run

    monkeypatch.setattr(HFHandle, "forward_loop", loop_around_the_last_mlp)
    last = compose_cfg().model.num_layers - 1
    with pytest.raises(QuantizeError) as err:
        execute(compose_cfg(*TINY), tmp_path)
    # The MLP's three linears (gate, up, down): their input quantizers never saw an activation.
    assert str(err.value).startswith(f"3 enabled quantizers have no calibrated amax (e.g. model.layers.{last}.mlp.")
    assert "Fix: more calibration data (data.num_samples)" in str(err.value)
    manifest = read_manifest(tmp_path)
    assert manifest["status"] == "failed" and "no calibrated amax" in manifest["error"]
    assert not (tmp_path / "export").exists() and not (tmp_path / "quantized").exists()


def test_auto_quantize_picks_only_listed_formats_and_leaves_disabled_layers_unquantized(tmp_path):
    # INT8 (W8A8, exported as int8_sq) is not a default candidate (NVFP4, FP8): seeing it proves the list is read.
    metrics = execute(compose_cfg(*TINY, "task.auto_quantize.enabled=true",
                                  "task.auto_quantize.formats=[INT8_DEFAULT_CFG,NVFP4_DEFAULT_CFG]",
                                  "task.auto_quantize.disabled_layers=[*layers.0.*]", "task.auto_quantize.score_size=2",
                                  "task.auto_quantize.effective_bits=8.5", "task.save_model=false", "task.export=false"),
                      tmp_path)
    layers = read_manifest(tmp_path)["quantization"]["layers"]
    first = {name: fmt for name, fmt in layers.items() if ".layers.0." in name}
    rest = {name: fmt for name, fmt in layers.items() if ".layers." in name and name not in first}
    assert len(first) == 7 and set(first.values()) == {"none"}, first  # q k v o gate up down
    # A real mix, from the list only ("none": ModelOpt's search may keep a layer in 16 bits).
    assert len(rest) == 3 * 7 and set(rest.values()) - {"none"} == {"int8_sq", "nvfp4"}, rest
    assert metrics["effective_bits"] <= 8.5


def _fp8_fake_quant(weight: "torch.Tensor") -> "torch.Tensor":
    """Per-tensor E4M3 fake quantization by its definition: scale = amax / 448, round to the
    nearest E4M3 value (torch's cast, ties to even), scale back."""
    scale = weight.abs().max() / 448.0
    return (weight / scale).to(torch.float8_e4m3fn).float() * scale


def test_vllm_fq_export_holds_the_fake_quantized_weights(tmp_path):
    from safetensors.torch import load_file

    from optmodel.facts.paths import TINY_MODELS_DIR

    execute(compose_cfg(*TINY, "task.quant_cfg=FP8_DEFAULT_CFG", "task.export_format=vllm_fq", "task.save_model=false"),
            tmp_path)
    exported = {}
    for shard in (tmp_path / "export").glob("*.safetensors"):
        exported.update(load_file(str(shard)))
    original = load_file(str(TINY_MODELS_DIR / "tiny_qwen3" / "model.safetensors"))
    linears = [n for n in original if ".layers." in n and n.endswith("proj.weight")]
    assert len(linears) == 4 * 7  # q k v o gate up down in each of the 4 layers
    for name in linears:
        w, got = original[name].float(), exported[name].float()
        assert exported[name].dtype == torch.bfloat16  # task.export_dtype's default
        ref = _fp8_fake_quant(w).to(torch.bfloat16).float()
        # Folded: the FP8 rounding error (~2.6% of the weight) is in the export, up to bf16 rounding.
        assert (got - ref).norm() / ref.norm() < 0.005, name
        assert (got - w).norm() / w.norm() > 0.01, f"{name}: the original weight, not the quantized one"
