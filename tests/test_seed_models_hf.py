"""The tiny Llama-4 and gpt-oss models on backend=hf, through the real entrypoint
(`optmodel.run.execute`): FP8, INT4 AWQ and NVFP4 (CPU fake-quant) quantize, measure and
export with the MoE coverage report; mmlu, eval and generate run on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optmodel.config.validate import ConfigError
from optmodel.checked import validate
from optmodel.facts.rundir import read_manifest
from optmodel.run import execute

from conftest import compose_cfg

MODELS = {  # name -> overrides every run of it needs
    "tiny_llama4": (),
    "tiny_gpt_oss": ("backend.attn_implementation=eager",),
}
FORMATS = {"FP8_DEFAULT_CFG": "FP8", "INT4_AWQ_CFG": "W4A16_AWQ", "NVFP4_DEFAULT_CFG": "NVFP4"}
SMALL = ("data.num_samples=4", "data.seq_len=64", "data.eval_max_sequences=8")
MMLU = Path(__file__).parent / "data" / "mmlu_sample"
ARITH = Path(__file__).parent / "data" / "eval_tasks" / "arith.jsonl"


def cfg(model, *overrides):
    return compose_cfg(f"model={model}", *MODELS[model], *overrides)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for model in MODELS:
        for fmt in FORMATS:
            run_dir = tmp_path_factory.mktemp(f"{model}_{fmt.lower()}")
            no_export = ("task.export=false",) if "AWQ" in fmt else ()  # refused: see below
            metrics = execute(cfg(model, f"task.quant_cfg={fmt}", *SMALL, *no_export), run_dir)
            print(f"{model} {fmt}: perplexity {metrics['perplexity_before']:.3f} -> "
                  f"{metrics['perplexity_after']:.3f} ({metrics['perplexity_increase_pct']:+.2f}%)")
            out[model, fmt] = (metrics, run_dir)
    return out


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model", MODELS)
def test_quantize_measures_and_exports(runs, model, fmt):
    metrics, run_dir = runs[model, fmt]
    assert read_manifest(run_dir)["status"] == "completed"
    assert metrics["perplexity_before"] < 30  # trained, far below uniform (1024)
    assert abs(metrics["perplexity_increase_pct"]) < 15
    if "AWQ" in fmt:
        assert not (run_dir / "export").exists()
        return
    export = run_dir / "export"
    assert json.loads((export / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] == FORMATS[fmt]
    assert list(export.glob("*.safetensors"))


@pytest.mark.parametrize("model", MODELS)
def test_every_expert_is_quantized_and_the_coverage_is_reported(runs, model):
    from optmodel.facts.checkpoint import read_hf_config
    from optmodel.facts.paths import TINY_MODELS_DIR

    metrics, run_dir = runs[model, "FP8_DEFAULT_CFG"]
    hf = read_hf_config(TINY_MODELS_DIR / model)
    n_experts = hf["num_local_experts"]
    moe_layers = len(hf.get("moe_layers") or range(hf["num_hidden_layers"]))
    quant = read_manifest(run_dir)["quantization"]
    unrouted = quant["experts_without_calibration_tokens"]
    # 4 x 64 calibration tokens reach most experts; the count is per expert, not per layer
    assert 0 <= metrics["moe_experts_without_tokens"] < n_experts * moe_layers
    assert sum(len(v) for v in unrouted.values()) == metrics["moe_experts_without_tokens"]
    # the exported experts carry FP8 weights: [experts, ...] scales for every MoE layer
    from safetensors import safe_open

    with safe_open(str(next((run_dir / "export").glob("*.safetensors"))), framework="pt") as f:
        expert_scales = [k for k in f.keys() if "experts" in k and k.endswith("weight_scale")]
    assert expert_scales, "expert weights were not quantized"


@pytest.mark.parametrize("model", MODELS)
def test_awq_export_of_these_moe_models_is_refused_with_the_reason(model):
    with pytest.raises(ConfigError, match="get_experts_list raises NotImplementedError"):
        validate(cfg(model, "task.quant_cfg=INT4_AWQ_CFG"))


def test_gpt_oss_runs_out_of_the_box_and_only_an_explicit_sdpa_is_refused():
    from optmodel.checked import resolve_run_config

    cfg = resolve_run_config(compose_cfg("model=tiny_gpt_oss"), typed_model=True)
    assert cfg.backend.attn_implementation == "eager"  # backend.attn_implementation=auto: what the family needs
    validate(cfg)
    assert resolve_run_config(compose_cfg()).backend.attn_implementation == "sdpa"
    with pytest.raises(ConfigError, match="backend.attn_implementation: transformers runs gpt-oss's attention sinks"):
        validate(compose_cfg("model=tiny_gpt_oss", "backend.attn_implementation=sdpa"))


@pytest.mark.parametrize("model", MODELS)
def test_mmlu_eval_and_generate_run_on_the_quantized_model(runs, model, tmp_path):
    _, quantized = runs[model, "FP8_DEFAULT_CFG"]
    subjects = "[astronomy]"  # one subject: the adapter is what is under test here
    mmlu = execute(cfg(model, "task=mmlu", f"task.data_dir={MMLU}", f"task.subjects={subjects}",
                       f"run.load={quantized}"), tmp_path / "mmlu")
    assert 0.0 <= mmlu["mmlu"] <= 1.0 and (tmp_path / "mmlu" / "mmlu.json").is_file()
    task = tmp_path / "arith.yaml"
    task.write_text(
        f'task: seed_arith\ndataset_path: json\ndataset_kwargs: {{data_files: {{test: "{ARITH}"}}}}\n'
        'test_split: test\noutput_type: multiple_choice\ndoc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\n")
    ev = execute(cfg(model, "task=eval", f"task.tasks=[{task}]", "task.limit=8"), tmp_path / "eval")
    assert 0.0 <= ev["seed_arith/acc"] <= 1.0
    execute(cfg(model, "task=generate", "task.prompts=['Seven plus five is']", "task.max_new_tokens=6"),
            tmp_path / "gen")
    rows = [json.loads(line) for line in (tmp_path / "gen" / "generations.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == "Seven plus five is" and rows[0]["completion"].strip()
