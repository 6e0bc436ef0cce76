"""The model-handle contract: one load() for the run's model and any second model, and
run dirs that carry their architecture into later runs (run.load=, no shape typed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg
from optmodel.facts.errors import ConfigError
from optmodel.facts.rundir import read_manifest
from optmodel.facts.paths import TINY_MODELS_DIR
from optmodel.run import execute

SAMPLE = Path(__file__).parent / "data" / "mmlu_sample"
SMALL = ("data.num_samples=2", "data.seq_len=64", "data.eval_max_sequences=4", "data.batch_size=2")


@pytest.fixture(scope="module")
def quantized_llama(tmp_path_factory):
    """An INT8 quantize run of tiny_llama (not the default model: inheritance must bring it)."""
    run_dir = tmp_path_factory.mktemp("handles") / "quantize"
    execute(compose_cfg("model=tiny_llama", "task.quant_cfg=INT8_DEFAULT_CFG", "task.export=false", *SMALL), run_dir)
    return run_dir


def test_two_handles_in_one_process_through_the_same_call():
    from optmodel.backends import load

    cfg = compose_cfg()
    run_model = load(cfg)
    second = load(cfg, source=TINY_MODELS_DIR / "tiny_llama")
    assert run_model.source == TINY_MODELS_DIR / "tiny_qwen3" and second.source == TINY_MODELS_DIR / "tiny_llama"
    assert run_model.architecture()["family"] == "qwen3" and second.architecture()["family"] == "llama"
    assert type(run_model.model).__name__ == "Qwen3ForCausalLM" and type(second.model).__name__ == "LlamaForCausalLM"
    ids = run_model.tokenizer("One plus two is", return_tensors="pt").input_ids
    a, b = run_model.logits(ids), second.logits(ids)
    assert a.shape == b.shape and not torch.allclose(a, b)  # two different models, both usable side by side
    assert second.generate(["One plus two is"], max_new_tokens=3) != [""]


def test_manifest_records_the_model_config_later_runs_inherit(quantized_llama):
    manifest = read_manifest(quantized_llama)
    assert manifest["model_config"]["name"] == "tiny_llama" and manifest["model_config"]["num_layers"] == 4
    assert manifest["architecture"]["family"] == "llama" and manifest["architecture"]["parameters"] > 0
    assert manifest["outputs"]["saved_model"] == str(quantized_llama / "quantized")


def test_mmlu_eval_and_generate_on_a_run_dir_with_no_model_typed(quantized_llama, tmp_path):
    """The default model is tiny_qwen3; run.load brings tiny_llama's architecture and its
    quantized weights (quantizers restored: the numbers are the quantized model's)."""
    mmlu = execute(compose_cfg("task=mmlu", f"run.load={quantized_llama}", f"task.data_dir={SAMPLE}",
                               "task.subjects=[astronomy]"), tmp_path / "mmlu")
    manifest = read_manifest(tmp_path / "mmlu")
    assert manifest["model"] == "tiny_llama" and manifest["loaded_from"] == str(quantized_llama)
    assert mmlu["mmlu_questions"] == 10
    gen = execute(compose_cfg("task=generate", f"run.load={quantized_llama}", "task.prompts=[One plus two is]",
                              "task.max_new_tokens=4"), tmp_path / "generate")
    assert gen["prompts"] == 1 and read_manifest(tmp_path / "generate")["model"] == "tiny_llama"
    rows = [json.loads(line) for line in (tmp_path / "generate" / "generations.jsonl").read_text().splitlines()]
    assert rows[0]["new_tokens"] >= 1


def test_export_of_a_run_dir_keeps_its_quantization(quantized_llama, tmp_path):
    execute(compose_cfg("task=export", f"run.load={quantized_llama}"), tmp_path / "export")
    config = json.loads((tmp_path / "export" / "export" / "hf_quant_config.json").read_text())
    assert config["quantization"]["quant_algo"] == "W8A8_SQ_PER_CHANNEL"  # ModelOpt's name for INT8 weights + activations
    assert read_manifest(tmp_path / "export")["architecture"]["family"] == "llama"


def test_a_typed_model_that_contradicts_the_run_dir_is_refused_naming_the_fields(quantized_llama):
    proc = subprocess.run([sys.executable, "-m", "optmodel", "task=mmlu", "model=tiny_qwen3", f"run.load={quantized_llama}",
                           f"task.data_dir={SAMPLE}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "run.load=" in proc.stderr and "model=tiny_qwen3" in proc.stderr
    assert "model.family: model=tiny_qwen3 says qwen3 but the run in" in proc.stderr
    assert "model.tied_embeddings" in proc.stderr  # each contradicting field named


def test_a_typed_model_that_agrees_with_the_run_dir_is_accepted(quantized_llama):
    from optmodel.config.inherit import inherit_run_model

    cfg = inherit_run_model(compose_cfg("model=tiny_llama", f"run.load={quantized_llama}"), typed_model=True)
    assert cfg.model.checkpoint == str(quantized_llama / "quantized")


def test_quantizing_an_already_quantized_run_is_refused(quantized_llama, tmp_path):
    with pytest.raises(ConfigError, match=r"run.load: .* holds an already-quantized model \(INT8_DEFAULT_CFG\)"):
        execute(compose_cfg(f"run.load={quantized_llama}"), tmp_path / "again")
    assert not (tmp_path / "again").exists()  # refused before the run dir is made
