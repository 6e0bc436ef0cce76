"""Quantize workflows beyond one format: auto-quantize and its resume, run dirs reloaded by
task=export, calibration data sources and packing, generation checks, MoE coverage."""

from __future__ import annotations

import json

import pytest
import torch

from optmodel.facts.records import DataError
from optmodel.facts.rundir import read_manifest
from optmodel.metrics import perplexity_of
from optmodel.run import execute

from conftest import compose_cfg

TINY_DATA = ("data.num_samples=4", "data.seq_len=64", "data.eval_max_sequences=8")


def test_auto_quantize_meets_the_bit_budget_and_resumes_from_its_search_state(tmp_path):
    overrides = ("task.auto_quantize.enabled=true", "task.auto_quantize.effective_bits=6.0", "task.auto_quantize.score_size=8",
                 "task.perplexity=false", "task.save_model=false", "data.num_samples=8", "data.seq_len=128")
    first = execute(compose_cfg(*overrides), tmp_path / "first")
    report = read_manifest(tmp_path / "first")["quantization"]["auto_quantize"]
    assert first["effective_bits"] <= 6.0 and report["search_effective_bits"] <= 6.0
    assert first["effective_bits"] == pytest.approx(report["search_effective_bits"], abs=1e-3)  # same accounting as ModelOpt
    assert report["constraints_satisfied"] and report["score_loss_calls"] > 0 and not report["restored_from_checkpoint"]
    layers = read_manifest(tmp_path / "first")["quantization"]["layers"]
    assert {"nvfp4", "fp8"} <= set(layers.values())  # a real mix, not one format everywhere

    # A second run (e.g. after the first was killed once scoring finished) restores the search
    # state: no sensitivity scoring, the same per-layer choice, and the export still follows.
    checkpoint = tmp_path / "first" / "auto_quantize_search.pth"
    assert checkpoint.is_file()
    execute(compose_cfg(*overrides, f"task.auto_quantize.checkpoint={checkpoint}"), tmp_path / "second")
    second = read_manifest(tmp_path / "second")["quantization"]
    assert second["auto_quantize"]["restored_from_checkpoint"] and second["auto_quantize"]["score_loss_calls"] == 0
    assert second["layers"] == layers
    assert json.loads((tmp_path / "second" / "export" / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] == "MIXED_PRECISION"

    # A run killed while ModelOpt wrote the state (in place, not atomic) leaves it cut short:
    # the next run is refused at validation, naming the file, instead of failing after loading.
    cut = tmp_path / "cut.pth"
    cut.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    from optmodel.tasks.quantize.spec import problems

    found = problems(compose_cfg(*overrides, f"task.auto_quantize.checkpoint={cut}"))
    assert [p for p in found if p.startswith(f"task.auto_quantize.checkpoint: {cut} is not a complete search state")]
    assert not problems(compose_cfg(*overrides, f"task.auto_quantize.checkpoint={checkpoint}"))


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("quantized")
    metrics = execute(compose_cfg("task.quant_cfg=INT4_AWQ_CFG", "task.kv_cache=fp8", "task.export=false", *TINY_DATA), run_dir)
    return run_dir, metrics


def test_saved_quantized_model_restores_exactly(quantized_run):
    run_dir, metrics = quantized_run
    from optmodel.backends import hf

    restored = hf.load(compose_cfg(*TINY_DATA), run_dir / "quantized")
    model, tok = restored.model, restored.tokenizer
    from optmodel.data.text import dataset_texts, pack

    cfg = compose_cfg(*TINY_DATA)
    heldout = pack(tok, dataset_texts(cfg.data, "eval"), 64, 8, "data.eval_path")
    assert perplexity_of(restored.logits, heldout, 8, torch.device("cpu")) == pytest.approx(metrics["perplexity_after"], rel=1e-5)


@pytest.mark.parametrize("fmt", ["hf", "vllm_fq"])
def test_export_task_from_a_quantized_run_dir(quantized_run, tmp_path, fmt):
    run_dir, _ = quantized_run
    execute(compose_cfg("task=export", f"run.load={run_dir}", f"task.format={fmt}"), tmp_path)
    out = tmp_path / "export"
    assert read_manifest(tmp_path)["status"] == "completed"
    assert list(out.glob("*.safetensors")) and (out / "tokenizer.json").is_file()
    assert (out / "chat_template.jinja").is_file() or "chat_template" in (out / "tokenizer_config.json").read_text()
    if fmt == "hf":
        quant = json.loads((out / "hf_quant_config.json").read_text())["quantization"]
        assert quant["quant_algo"] == "W4A16_AWQ" and quant["kv_cache_quant_algo"] == "FP8"
    else:
        assert (out / "vllm_fq_modelopt_state.pth").is_file() and not (out / "hf_quant_config.json").exists()


def test_export_task_refuses_a_dir_that_is_not_a_finished_run(tmp_path):
    from optmodel.config.validate import ConfigError

    with pytest.raises(ConfigError, match="is not an optmodel run dir"):
        execute(compose_cfg("task=export", f"run.load={tmp_path}"), tmp_path / "run")
    with pytest.raises(ConfigError, match="run.load: task=export exports the model of an earlier run"):
        execute(compose_cfg("task=export"), tmp_path / "run")


def test_chat_messages_calibrate_with_sorted_batches_and_count_padding(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Name a colour." * (i + 1)}, {"role": "assistant", "content": "Blue."}]}
            for i in range(6)]
    calib = tmp_path / "chat.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in rows))
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("The river ran past the old mill and on to the sea. " * 40)
    metrics = execute(compose_cfg("data=text", "data.source=jsonl", f"data.calib_path={calib}", f"data.eval_path={heldout}",
                                  "data.packing=sort", "data.batch_size=4", "data.seq_len=128", "data.num_samples=6",
                                  "task.export=false", "task.save_model=false"), tmp_path / "run")
    from transformers import AutoTokenizer

    from optmodel.facts.checkpoint import resolve_checkpoint

    tok = AutoTokenizer.from_pretrained(resolve_checkpoint(compose_cfg().model))
    lengths = sorted((min(128, len(tok(tok.apply_chat_template(r["messages"], tokenize=False), add_special_tokens=False)
                                    ["input_ids"]) + 1) for r in rows), reverse=True)
    assert metrics["calib_tokens"] == sum(lengths)
    # sorted batches of 4 and 2 rows, each padded to its own longest row
    assert metrics["calib_pad_tokens"] == sum(lengths[0] - n for n in lengths[:4]) + sum(lengths[4] - n for n in lengths[4:])
    assert 0 < metrics["calib_useful_token_ratio"] < 1


def test_hf_dataset_from_a_local_dir_and_a_clear_error_when_absent(tmp_path):
    data_dir = tmp_path / "ds"
    data_dir.mkdir()
    (data_dir / "train.jsonl").write_text("".join(json.dumps({"article": f"Story {i}. " + "Words flow. " * 60}) + "\n" for i in range(8)))
    (data_dir / "validation.jsonl").write_text("".join(json.dumps({"article": "Held out text here. " * 60}) + "\n" for _ in range(4)))
    metrics = execute(compose_cfg("data=hf", f"data.dataset={data_dir}", "data.text_field=article", *TINY_DATA,
                                  "task.export=false", "task.save_model=false"), tmp_path / "run")
    assert metrics["calib_sequences"] == 4 and metrics["calib_pad_tokens"] == 0

    with pytest.raises(DataError, match="local Hugging Face cache.*Fix: on a machine with network"):
        execute(compose_cfg("data=hf", "data.dataset=no-such-org/no-such-dataset", *TINY_DATA), tmp_path / "absent")
    assert not (tmp_path / "absent" / "export").exists()


def test_generation_check_saves_completions_and_fails_on_a_wrong_reference(tmp_path):
    from optmodel.tasks.quantize.run import QuantizeError

    overrides = ("task.perplexity=false", "data.num_samples=2", "data.seq_len=64", "task.generate.max_new_tokens=8",
                 "task.generate.prompts=[The river,Once upon a time]")
    execute(compose_cfg(*overrides), tmp_path / "ok")
    rows = [json.loads(line) for line in (tmp_path / "ok" / "generations.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["The river", "Once upon a time"] and all(r["completion"] for r in rows)

    with pytest.raises(QuantizeError, match="generation check: 1 of 1 completions differ"):
        execute(compose_cfg(*overrides, "task.generate.references=[zzzz qqqq]"), tmp_path / "bad")
    assert read_manifest(tmp_path / "bad")["status"] == "failed"
    assert not (tmp_path / "bad" / "export").exists() and (tmp_path / "bad" / "generations.jsonl").is_file()


def test_moe_experts_without_calibration_tokens_are_reported(tmp_path):
    # 2 tokens x top-2 routing reach at most 4 of the 8 experts per layer.
    metrics = execute(compose_cfg("model=tiny_qwen3_moe", "data.num_samples=1", "data.seq_len=2", "data.batch_size=1",
                                  "task.perplexity=false", "task.save_model=false"), tmp_path)
    unrouted = read_manifest(tmp_path)["quantization"]["experts_without_calibration_tokens"]
    assert metrics["moe_experts_without_tokens"] >= 4 * 4
    assert sum(len(v) for v in unrouted.values()) == metrics["moe_experts_without_tokens"]
    assert all(name.endswith("mlp.experts") for name in unrouted)
    # ModelOpt calibrates their weights from the weights themselves: the export is complete.
    assert json.loads((tmp_path / "export" / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] == "FP8"


def test_auto_quantize_kl_div_scores_without_a_loss(tmp_path):
    metrics = execute(compose_cfg("task.auto_quantize.enabled=true", "task.auto_quantize.method=kl_div",
                                  "task.auto_quantize.effective_bits=7.0", *TINY_DATA, "task.save_model=false"), tmp_path)
    report = read_manifest(tmp_path)["quantization"]["auto_quantize"]
    assert report["method"] == "kl_div" and report["score_loss_calls"] == 0  # KL of logits, no labels
    assert metrics["effective_bits"] <= 7.0 and report["constraints_satisfied"]
