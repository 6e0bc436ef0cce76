"""run.dry_run=true: the plan from the config alone, checked against hand-computed numbers."""

import subprocess
import sys

import pytest

from conftest import compose_cfg
from optmodel.facts.layout import required_world_size
from optmodel.plan import make_plan

# Kimi-K2-Instruct, one decoder layer at TP 1 / EP 1, counted by hand from MODELS.md:
# hidden 7168, 64 heads, MLA q_lora 1536, kv_lora 512, qk 128 + rope 64, v 128.
H = 7168
MLA_Q = H * 1536 + 1536 + 1536 * 64 * (128 + 64)  # q down-proj, its norm, q up-proj
MLA_KV = H * (512 + 64) + 512 + 512 * 64 * (128 + 128)  # kv down-proj (+ rope key), norm, kv up-proj
MLA_OUT = 64 * 128 * H
NORMS = 2 * H  # input and pre-MLP RMSNorm
DENSE_LAYER = NORMS + MLA_Q + MLA_KV + MLA_OUT + 3 * H * 18432  # SwiGLU 18432
MOE_LAYER = NORMS + MLA_Q + MLA_KV + MLA_OUT + H * 384 + 384 * 3 * H * 2048 + 3 * H * 2048  # router, 384 experts, shared
EMBEDDING = 163840 * H


def kimi_cfg(*overrides):
    return compose_cfg("model=kimi_k2_instruct", "parallel=pp16_kimi", "backend=megatron", "backend.dtype=bfloat16", *overrides)


def test_kimi_k2_on_pp16_kimi_matches_hand_computed_numbers():
    plan = make_plan(kimi_cfg())
    assert plan.world_size == 16 and (plan.tensor, plan.pipeline, plan.expert, plan.data) == (1, 16, 1, 1)
    assert [len(s.layers) for s in plan.stages] == [3] + [4] * 14 + [2]
    assert plan.stages[0].layers == [0, 1, 2] and plan.stages[-1].layers == [59, 60]
    assert (plan.stages[0].dense_layers, plan.stages[0].moe_layers) == (1, 2)  # first layer dense
    assert plan.experts_per_rank == 384
    first = DENSE_LAYER + 2 * MOE_LAYER + EMBEDDING
    middle = 4 * MOE_LAYER
    last = 2 * MOE_LAYER + H + EMBEDDING  # final norm + output layer
    assert [s.params_per_gpu for s in plan.stages] == [first] + [middle] * 14 + [last]
    assert middle == 68_237_459_456
    assert plan.param_bytes_per_gpu == 2 * middle  # bf16: 127.1 GiB, more than one 80 GB GPU
    assert plan.optimizer_bytes_per_gpu == 12 * middle
    assert plan.total_params == DENSE_LAYER + 60 * MOE_LAYER + 2 * EMBEDDING + H


def test_kimi_k2_training_layout_spreads_experts_over_64_ranks():
    plan = make_plan(compose_cfg("model=kimi_k2_instruct", "parallel=kimi_k2", "backend=megatron"))
    assert required_world_size(compose_cfg("parallel=kimi_k2").parallel) == 64
    assert (plan.world_size, plan.data, plan.expert_data, plan.experts_per_rank) == (64, 8, 1, 6)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    from optmodel.run import execute

    plan = execute(kimi_cfg("run.dry_run=true", "task=convert"), tmp_path / "run")
    out = capsys.readouterr().out
    assert plan["layers_per_stage"] == [3] + [4] * 14 + [2]
    assert "16 = TP 1 x PP 16" in out and "127.1 GiB" in out and "stage 15" in out
    assert "model.checkpoint" in out  # the missing checkpoint is listed, not fatal, in a plan
    assert not (tmp_path / "run").exists()


def test_dry_run_still_refuses_a_bad_layout():
    from optmodel.config.validate import ConfigError
    from optmodel.run import execute

    with pytest.raises(ConfigError, match="parallel.pipeline"):
        execute(kimi_cfg("run.dry_run=true", "parallel.pipeline_last_stage_layers=3"), "unused")


def test_dry_run_works_for_the_hf_backend(capsys):
    from optmodel.run import execute

    plan = execute(compose_cfg("run.dry_run=true"), "unused")
    assert plan["world_size"] == 1 and plan["layers_per_stage"] == [4]
    assert plan["params_per_gpu"] == [plan["total_params"]]


def test_kimi_convert_config_composes_on_the_command_line():
    out = subprocess.run(
        [sys.executable, "-m", "optmodel", "model=kimi_k2_instruct", "parallel=pp16_kimi", "task=convert", "--cfg", "job"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "name: convert" in out and "pipeline_first_stage_layers: 3" in out and "num_layers: 61" in out


def test_world_size_that_does_not_fit_the_layout_is_refused_before_any_group():
    import torch.distributed as dist

    from optmodel.distributed import LaunchEnv
    from optmodel.backends.megatron_world import init_model_parallel

    with pytest.raises(ValueError, match=r"needs a multiple of TP x PP x CP = 2 processes, but 3 were launched"):
        init_model_parallel(compose_cfg("parallel=tp2").parallel, launch=LaunchEnv(world_size=3))
    assert not dist.is_initialized()


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["parallel=tp2", "parallel.sequence_parallel=true", "run.world_size=2"], "parallel.sequence_parallel"),
        (["parallel.context=2", "run.world_size=2"], "parallel.context"),
        (["model=tiny_qwen3_moe", "parallel.expert=2", "backend.token_dispatcher=alltoall", "run.world_size=2"],
         "backend.token_dispatcher"),
        (["task=export", "run.load=/nonexistent", "parallel=tp2", "run.world_size=2"], "parallel.tensor: export to Hugging Face"),
    ],
)
def test_megatron_settings_this_machine_cannot_run_are_refused(overrides, field):
    from optmodel.config.validate import ConfigError
    from optmodel.checked import validate

    import importlib.util

    if field in ("parallel.sequence_parallel", "parallel.context") and importlib.util.find_spec("transformer_engine"):
        pytest.skip("Transformer-Engine is installed: this layout can run here")
    cfg = compose_cfg("backend=megatron", "backend.device=cpu", "task=convert", *overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert field in str(err.value) and "Fix:" in str(err.value)


def test_dry_run_plans_for_the_cluster_not_this_machine(capsys):
    """kimi_k2 (TP 8, EP 64, sequence parallel) on a laptop: a plan, with what this machine lacks as notes."""
    import importlib.util

    from optmodel.run import execute

    plan = execute(compose_cfg("model=kimi_k2_instruct", "parallel=kimi_k2", "backend=megatron", "task=convert",
                               "backend.dtype=bfloat16", "run.dry_run=true"), "unused")
    out = capsys.readouterr().out
    assert plan["world_size"] == 64 and plan["experts_per_rank"] == 6
    # attention and dense layer split 8 ways, experts 64 ways: 1/64 of the routed experts per GPU
    assert plan["params_per_gpu"][0] < plan["total_params"] / 50
    if importlib.util.find_spec("transformer_engine") is None:
        assert "parallel.sequence_parallel: needs Transformer-Engine" in out


@pytest.mark.parametrize(
    "model, published",
    [  # parameter counts of the model cards (Llama-3.1-8B exactly; the others as rounded there)
        ("llama3_1_8b_instruct", 8_030_261_248),
        ("llama3_2_1b_instruct", 1.24e9),
        ("qwen3_0_6b", 0.60e9),  # tied embeddings counted once
        ("qwen3_8b", 8.19e9),
        ("qwen2_5_7b_instruct", 7.61e9),
        ("qwen3_30b_a3b", 30.5e9),
        ("qwen3_235b_a22b", 235e9),
        ("deepseek_r1", 671e9),  # without the multi-token-prediction layer
        ("deepseek_v2_lite", 15.7e9),
        ("kimi_k2_instruct", 1.03e12),
    ],
)
def test_plan_total_matches_the_published_parameter_count(model, published):
    total = make_plan(compose_cfg(f"model={model}")).total_params
    if isinstance(published, int):
        assert total == published
    else:
        assert total == pytest.approx(published, rel=0.01)  # within the rounding of the card
