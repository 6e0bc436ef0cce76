"""backend=megatron at TP=2, PP=2 and EP=2: two gloo processes on CPU.

One spawn runs every scenario (parallel state is re-initialized between them), so the
heavy imports are paid once. Each scenario imports the tiny model from its HF checkpoint
with ModelOpt's importer and compares full logits to transformers' in fp32.
"""

import pytest

from conftest import compose_cfg
from megatron_workers import spawn
from optmodel.plan import make_plan

SCENARIOS = [
    ("tp2_llama", "tiny_llama", ["parallel=tp2"]),
    ("tp2_qwen3", "tiny_qwen3", ["parallel=tp2"]),
    ("tp2_deepseek", "tiny_deepseek", ["parallel=tp2"]),  # MLA + MoE with ETP 2
    # Kimi-K2's training layout in small: TP 2 attention, experts EP 2 with no tensor split
    ("tp2_etp1_ep2_deepseek", "tiny_deepseek", ["parallel=tp2", "parallel.expert=2", "parallel.expert_tensor=1"]),
    ("pp2_llama", "tiny_llama", ["parallel=export_pp"]),
    ("pp2_qwen3", "tiny_qwen3", ["parallel=export_pp"]),
    ("ep2_qwen3_moe", "tiny_qwen3_moe", ["parallel.expert=2"]),
    ("ep2_deepseek", "tiny_deepseek", ["parallel.expert=2"]),
    # Llama-4 (dense + MoE layers, shared expert, NoPE, qk L2 norm) and gpt-oss (sinks, biases)
    ("tp2_etp1_llama4", "tiny_llama4", ["parallel=tp2", "parallel.expert_tensor=1"]),
    ("ep2_llama4", "tiny_llama4", ["parallel.expert=2"]),
    ("tp2_etp1_gpt_oss", "tiny_gpt_oss", ["parallel=tp2", "parallel.expert_tensor=1"]),
    ("ep2_gpt_oss", "tiny_gpt_oss", ["parallel.expert=2"]),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("megatron_parallel") / "results.json"
    return spawn([list(s) for s in SCENARIOS], str(out))


@pytest.mark.parametrize("name", [s[0] for s in SCENARIOS])
def test_logits_match_hf_on_every_rank(results, name):
    diffs = [rank["max_abs_diff"] for rank in results[name]]
    assert max(diffs) < 1e-4, f"{name}: max |megatron - HF| per rank = {diffs}"


@pytest.mark.parametrize("name", ["pp2_llama", "pp2_qwen3"])
def test_each_pipeline_stage_holds_its_layers_with_hf_weights(results, name):
    assert [rank["layers"] for rank in results[name]] == [[0, 1], [2, 3]]
    assert all(rank["weights_match_hf"] for rank in results[name])


@pytest.mark.parametrize("name, model", [("pp2_llama", "tiny_llama"), ("pp2_qwen3", "tiny_qwen3")])
def test_pipeline_parallel_export_reloads_in_transformers(results, name, model):
    import torch
    from transformers import AutoModelForCausalLM

    from optmodel.facts.paths import TINY_MODELS_DIR

    export = results[name][0]["export"]
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)(ids).logits
        theirs = AutoModelForCausalLM.from_pretrained(TINY_MODELS_DIR / model, dtype=torch.float32)(ids).logits
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("name", ["ep2_qwen3_moe", "ep2_deepseek", "tp2_etp1_ep2_deepseek"])
def test_expert_parallel_splits_the_experts(results, name):
    # 8 experts over EP 2: each rank holds 4 of every MoE layer, and all 4 layers
    assert [rank["local_experts"] for rank in results[name]] == [4, 4]
    assert [rank["layers"] for rank in results[name]] == [[0, 1, 2, 3]] * 2


@pytest.mark.parametrize("name, model, overrides", SCENARIOS)
def test_dry_run_plan_counts_the_parameters_each_rank_builds(results, name, model, overrides):
    cfg = compose_cfg(f"model={model}", "backend=megatron", *overrides)
    plan = make_plan(cfg, world_size=2)
    per_stage = [s.params_per_gpu for s in plan.stages]
    built = [rank["params"] for rank in results[name]]
    if cfg.parallel.pipeline == 2:
        assert built == per_stage
    else:  # TP / EP ranks of one stage hold the same number of parameters
        assert built == per_stage * 2
