"""task=eagle3 on backend=megatron on one GPU, through optmodel.run.execute: what the CPU test
(tests/test_eagle3_megatron.py) cannot reach — megatron-core's distributed optimizer, and the
TE spec where Transformer-Engine is installed (megatron_compat's adaptations off). Skipped
without CUDA."""

import pytest

from conftest import compose_cfg
from optmodel.run import execute

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def megatron_world():
    yield
    from optmodel.backends.megatron_world import destroy_model_parallel

    destroy_model_parallel()


def test_megatron_eagle3_on_gpu_raises_the_acceptance_length_and_validates_alike_on_hf(tmp_path):
    acc = ["task.acceptance.num_prompts=3", "task.acceptance.max_new_tokens=24", "task.acceptance.draft_steps=3"]
    metrics = execute(compose_cfg("task=eagle3", "backend=megatron", "backend.device=cuda", "backend.dtype=float32",
                                  "task.training.lr=3e-3", "task.training.min_lr_ratio=0.0033", "task.training.max_steps=30", "task.seq_len=64",
                                  "task.training.save_every=30", "task.al_every=30", "task.draft_vocab_size=512", "run.seed=0",
                                  *acc), tmp_path / "train")
    assert metrics["al_before"] < metrics["al_after"] and metrics["al_after"] > 1.2
    out = execute(compose_cfg("task=validate", f"run.load={tmp_path / 'train'}", "backend.device=cuda",
                              "backend.dtype=float32", *acc), tmp_path / "validate")
    assert out["acceptance_length"] == pytest.approx(metrics["al_after"], abs=0.02)
