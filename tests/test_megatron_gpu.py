"""backend=megatron on a GPU: NCCL world, Transformer-Engine layer specs (skipped without CUDA)."""

import pytest
import torch

from conftest import compose_cfg
from optmodel.facts.paths import TINY_MODELS_DIR

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def megatron_world():
    yield
    from optmodel.backends.megatron_world import destroy_model_parallel

    destroy_model_parallel()


# tiny_llama4 / tiny_gpt_oss: NoPE layers, qk L2 norm, sinks and the sliding window through TE's attention
@pytest.mark.parametrize("model", ["tiny_qwen3", "tiny_qwen3_moe", "tiny_deepseek", "tiny_llama4", "tiny_gpt_oss"])
def test_te_spec_on_nccl_gives_hf_logits(model):
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from optmodel.backends import megatron
    from optmodel.facts.machine import transformer_engine_usable

    handle = megatron.load(compose_cfg(f"model={model}", "backend=megatron", "backend.device=cuda", "backend.dtype=float32"))
    assert dist.get_backend() == "nccl"
    if transformer_engine_usable():
        assert any("TE" in type(m).__name__ for m in handle.model.modules()), "TE importable but not used"
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    hf = AutoModelForCausalLM.from_pretrained(TINY_MODELS_DIR / model, dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        ref = hf(ids.cuda()).logits.float()
    # TE kernels (TF32 matmuls, fused attention) are not bit-exact with transformers' eager path
    assert (handle.logits(ids) - ref).abs().max().item() < 1e-2


def test_a_gpu_run_sees_cuda_unpatched():
    from optmodel.backends import megatron
    from optmodel.backends.megatron_cpu import cpu_patches_active

    handle = megatron.build(compose_cfg("model=tiny_qwen3", "backend=megatron", "backend.device=cuda"))
    assert not cpu_patches_active() and isinstance(torch.cuda.current_device(), int)
    assert next(handle.model.parameters()).is_cuda


def test_cpu_init_keeps_the_weights_in_host_memory_and_exports_them(tmp_path):
    """backend.cpu_init=true on a GPU run: the weights are built and stay in host memory (convert /
    export of stages larger than a GPU), and the HF export from there is the checkpoint."""
    from safetensors.torch import load_file

    from optmodel.backends import megatron

    handle = megatron.load(compose_cfg("model=tiny_qwen3", "backend=megatron", "backend.device=cuda",
                                       "backend.cpu_init=true", "backend.dtype=bfloat16"))
    assert handle.device.type == "cuda"
    assert not any(p.is_cuda for p in handle.model.parameters()), "cpu_init: no weight on the GPU"
    out = megatron.export_hf(handle, tmp_path / "export", dtype="bfloat16")
    exported = {}
    for shard in out.glob("*.safetensors"):
        exported.update(load_file(str(shard)))
    original = load_file(str(TINY_MODELS_DIR / "tiny_qwen3" / "model.safetensors"))
    assert set(exported) == set(original)
    assert all(torch.equal(exported[k], original[k]) for k in original)
