"""task=distill on backend=megatron on one GPU, through optmodel.run.execute: what the CPU
test (tests/test_distill_megatron.py) cannot reach — megatron-core's distributed optimizer,
and for bf16 weights its mixed-precision optimizer with fp32 main parameters (both refuse
CPU tensors). Skipped without CUDA."""

import sys
from pathlib import Path

import pytest

from conftest import compose_cfg
from optmodel.facts.rundir import read_manifest
from optmodel.facts.paths import TINY_MODELS_DIR
from optmodel.run import execute

sys.path.insert(0, str(Path(__file__).parent))
from megatron_training_workers import student_checkpoint  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def megatron_world():
    yield
    from optmodel.backends.megatron_world import destroy_model_parallel

    destroy_model_parallel()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_megatron_distill_on_gpu_lowers_the_kd_loss_and_saves_a_loadable_student(tmp_path, dtype):
    student = student_checkpoint(str(tmp_path / "student"))
    run_dir = tmp_path / "run"
    overrides = ["task=distill", "model=auto", f"model.checkpoint={student}",
                 f"task.teacher={TINY_MODELS_DIR / 'tiny_qwen3'}", "backend=megatron", "backend.device=cuda",
                 f"backend.dtype={dtype}", "data.seq_len=64", "data.eval_max_sequences=8", "data.batch_size=4",
                 "task.training.micro_batch_size=2", "task.training.global_batch_size=4", "task.training.lr=1e-3",
                 "task.training.max_steps=8", "task.training.log_every=1", "task.training.save_every=4"]
    metrics = execute(compose_cfg(*overrides), run_dir)
    kd = [row["kd_loss"] for row in read_manifest(run_dir)["training"]["history"]]
    assert len(kd) == 8 and kd[-1] < kd[0], kd
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    assert (run_dir / "checkpoints" / "checkpoint-8" / "optmodel_complete").is_file()
    from optmodel.backends import load
    from optmodel.config.inherit import inherit_run_model

    handle = load(inherit_run_model(compose_cfg(*overrides, f"run.load={run_dir}")))
    assert handle.architecture()["num_layers"] == 2
