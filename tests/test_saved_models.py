"""What a quantize run writes, on disk: `quantized/` in the checkpoint's dtype (bf16 for the
bundled models, though computed in float32 on CPU), no larger than the input plus the
quantizer state, reloading to the measured model; the export holds only what a
`save_pretrained` of that model writes plus the quantization files. Real ModelOpt FP8."""

from __future__ import annotations

import json
import re

import pytest
import torch

from optmodel.facts.paths import TINY_MODELS_DIR
from optmodel.run import execute

from conftest import compose_cfg

TINY = ("data.num_samples=2", "data.seq_len=64", "data.eval_max_sequences=4")
SHARD = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors")
QUANT_FILES = {"hf_quant_config.json"}


@pytest.fixture(scope="module")
def fp8_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fp8")
    execute(compose_cfg("task.quant_cfg=FP8_DEFAULT_CFG", *TINY), run_dir)
    return run_dir


def weight_bytes(path):
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def test_quantized_dir_is_stored_in_the_checkpoint_dtype_and_size(fp8_run):
    from safetensors import safe_open

    from optmodel.backends import hf

    saved = fp8_run / "quantized"
    source = TINY_MODELS_DIR / "tiny_qwen3"
    assert json.loads((saved / "config.json").read_text())["dtype"] == "bfloat16"
    restored = hf.load(compose_cfg(*TINY), saved)
    params = {name for name, _ in restored.model.named_parameters()}
    quantizer_bytes, dtypes = 0, set()
    for shard in saved.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if key in params:
                    dtypes.add(tensor.dtype)
                else:  # quantizer amax / scales
                    quantizer_bytes += tensor.numel() * tensor.element_size()
    assert dtypes == {torch.bfloat16}  # the float32 compute copy casts back exactly
    assert weight_bytes(saved) <= 1.05 * weight_bytes(source) + quantizer_bytes
    # the reload computes in float32 (auto on this CPU) with the original bf16 values
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    assert torch.equal(restored.model.get_input_embeddings().weight, base.get_input_embeddings().weight)


def test_export_holds_only_what_save_pretrained_writes_plus_quantization_files(fp8_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = TINY_MODELS_DIR / "tiny_qwen3"
    reference = tmp_path / "reference"
    AutoModelForCausalLM.from_pretrained(source).save_pretrained(reference)
    AutoTokenizer.from_pretrained(source).save_pretrained(reference)
    allowed = {f.name for f in reference.iterdir()} | QUANT_FILES | {"model.safetensors.index.json"}
    export = fp8_run / "export"
    files = {f.name for f in export.iterdir()}
    assert "hf_quant_config.json" in files
    assert [name for name in files if name not in allowed and not SHARD.fullmatch(name)] == []


def test_tied_weights_stay_tied_in_the_stored_dtype(tmp_path):
    """A float32 compute copy of a bf16 model with tied embeddings saves as one bf16 tensor,
    the input's size (two separate casts would store the vocabulary matrix twice)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from optmodel.backends.storage import stored_state_dict

    config = AutoConfig.for_model("qwen3", num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=32, vocab_size=5000,
                                  tie_word_embeddings=True)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(tmp_path / "in")
    compute = AutoModelForCausalLM.from_pretrained(tmp_path / "in", dtype=torch.float32)
    compute.save_pretrained(tmp_path / "out", state_dict=stored_state_dict(compute, "bfloat16"))
    assert weight_bytes(tmp_path / "out") <= 1.01 * weight_bytes(tmp_path / "in")


def test_exact_cast_finds_an_inexact_value_in_any_block():
    """The round-trip check runs block by block (no whole float32 temporary): a value bf16 cannot
    hold, past the first block, still keeps the tensor in float32; an exact tensor narrows."""
    from optmodel.backends.storage import CAST_CHECK_ELEMENTS, exact_cast

    exact = torch.arange(CAST_CHECK_ELEMENTS + 7, dtype=torch.float32) % 256  # integers < 256: exact in bf16
    narrow = exact_cast(exact, torch.bfloat16)
    assert narrow.dtype == torch.bfloat16 and torch.equal(narrow.float(), exact)
    inexact = exact.clone()
    inexact[-1] = 1 + 2**-20  # bf16 keeps 8 mantissa bits
    assert exact_cast(inexact, torch.bfloat16) is None
