"""The tiny Llama-4 and gpt-oss models on backend=megatron in one process: megatron-core's
local spec with the family knobs, weights through ModelOpt's importer, logits equal to
transformers' in fp32 (64 tokens: gpt-oss's 32-token sliding window is active). TP 2 / EP 2
run in tests/test_megatron_parallel.py."""

import pytest
import torch

from conftest import compose_cfg
from optmodel.config.validate import ConfigError
from optmodel.checked import validate
from optmodel.facts.paths import TINY_MODELS_DIR

IDS = torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", autouse=True)
def megatron_world():
    yield
    from optmodel.backends.megatron_world import destroy_model_parallel

    destroy_model_parallel()


@pytest.mark.parametrize("model", ["tiny_llama4", "tiny_gpt_oss"])
def test_megatron_logits_equal_transformers(model):
    from transformers import AutoModelForCausalLM

    from optmodel.backends import megatron

    handle = megatron.load(compose_cfg(f"model={model}", "backend=megatron", "backend.device=cpu",
                                       "backend.dtype=float32"))
    hf = AutoModelForCausalLM.from_pretrained(TINY_MODELS_DIR / model, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(IDS).logits
    diff = (handle.logits(IDS) - ref).abs().max().item()
    assert diff < 1e-5, f"{model}: max |megatron - HF| = {diff}"
    assert sum(p.numel() for p in handle.model.parameters()) == sum(p.numel() for p in hf.parameters())


def test_the_llama4_knobs_are_the_ones_transformers_uses():
    from optmodel.backends.megatron_spec import transformer_config

    cfg = compose_cfg("model=tiny_llama4", "backend=megatron")
    config = transformer_config(cfg.model, cfg.parallel)
    assert config.rotary_interleaved and config.moe_apply_probs_on_input
    assert config.no_rope_freq == [0, 0, 0, 1]  # transformers: no_rope_layers [1, 1, 1, 0]
    assert config.moe_layer_freq == [0, 1, 0, 1]  # transformers: moe_layers [1, 3]


def test_the_gpt_oss_knobs_are_the_ones_transformers_uses():
    from optmodel.backends.megatron_spec import transformer_config

    cfg = compose_cfg("model=tiny_gpt_oss", "backend=megatron")
    config = transformer_config(cfg.model, cfg.parallel)
    assert config.softmax_type == "learnable" and config.add_bias_linear
    assert config.window_size == (31, 0) and config.window_attn_skip_freq == 2  # window 32 on layers 0, 2
    assert (config.glu_linear_offset, config.activation_func_clamp_value) == (1.0, 7.0)


@pytest.mark.parametrize("overrides, message", [
    (("model=tiny_gpt_oss", "parallel=tp2"), "Fix: parallel.expert_tensor=1"),
    (("model=tiny_llama4", "parallel=tp2"), "Fix: parallel.expert_tensor=1"),
    (("model=tiny_llama4", "data.seq_len=9000", "model.max_position_embeddings=16384"), "data.seq_len<=8191"),
])
def test_what_megatron_cannot_reproduce_is_refused_with_the_reason(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate(compose_cfg(*overrides, "backend=megatron", "task=convert"), world_size=2, check_inputs=False)


def test_megatron_export_of_the_text_only_llama4_is_refused_with_the_reason():
    from optmodel.config.validate import ConfigError
    from optmodel.checked import validate

    with pytest.raises(ConfigError, match="has rules for Llama4ForConditionalGeneration"):
        validate(compose_cfg("model=tiny_llama4", "backend=megatron", "task=quantize", "data.seq_len=64"))
    validate(compose_cfg("model=tiny_llama4", "backend=megatron", "task=quantize", "task.export=false",
                         "data.seq_len=64"))
