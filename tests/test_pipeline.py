"""task=pipeline: quantize -> mmlu -> export on one load of the tiny model, in one run dir; a
failing step keeps the earlier steps' outputs; chains that cannot run are refused at validation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import optmodel.backends
from optmodel.facts.errors import ConfigError
from optmodel.checked import resolve_run_config
from optmodel.checked import config_problems
from optmodel.run import execute

from optmodel.facts.rundir import read_manifest

from conftest import compose_cfg

SAMPLE = Path(__file__).parent / "data" / "mmlu_sample"
SUBJECTS = ["astronomy", "high_school_geography"]
SMALL = ["data.num_samples=4", "data.seq_len=64", "data.eval_max_sequences=4", f"task.mmlu.data_dir={SAMPLE}"]


def questions_in(subjects):
    import pyarrow.parquet as pq

    return sum(pq.read_table(f).num_rows for s in subjects for f in (SAMPLE / s).glob("test-*.parquet"))


def counted_execute(cfg, run_dir):
    """execute with every backend load counted (the real loader underneath)."""
    loads, real = [], optmodel.backends.load

    def counting(cfg, source=None, **how):
        loads.append(source)
        return real(cfg, source, **how)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(optmodel.backends, "load", counting)
        try:
            return execute(cfg, run_dir), loads
        except BaseException as err:
            err.loads = loads
            raise


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, one_thread):
    run_dir = tmp_path_factory.mktemp("pipeline")
    cfg = compose_cfg("task=pipeline", "task.steps=[quantize,mmlu,export]", *SMALL,
                      f"task.mmlu.subjects=[{','.join(SUBJECTS)}]", f"run.output_dir={run_dir}")
    metrics, loads = counted_execute(cfg, run_dir)
    return run_dir, metrics, loads, read_manifest(run_dir)


def problems(*overrides):
    cfg = resolve_run_config(compose_cfg("task=pipeline", *overrides), typed_model=False)
    return config_problems(cfg)


def test_pipeline_loads_the_model_once_and_writes_every_step_in_one_run_dir(pipeline_run):
    run_dir, metrics, loads, manifest = pipeline_run
    assert loads == [None] and manifest["model_loads"] == 1 and manifest["other_model_loads"] == []
    assert manifest["status"] == "completed" and manifest["task"] == "pipeline"
    assert list(manifest["steps"]) == ["quantize", "mmlu", "export"]
    assert {s["status"] for s in manifest["steps"].values()} == {"completed"}
    # each task's own outputs, under their names, in the one run dir
    assert (run_dir / "quantized" / "config.json").is_file()
    assert manifest["steps"]["quantize"]["outputs"] == {"saved_model": str(run_dir / "quantized")}
    assert set(manifest["steps"]["mmlu"]["outputs"]) == {"mmlu", "mmlu_table"}
    assert manifest["outputs"]["export"] == str(run_dir / "export")
    # the export step got the quantized model in memory: its checkpoint is FP8
    hf_quant = json.loads((run_dir / "export" / "hf_quant_config.json").read_text())
    assert hf_quant["quantization"]["quant_algo"] == "FP8"
    assert not (run_dir / "quantized" / "hf_quant_config.json").exists()


def test_pipeline_records_each_steps_metrics_and_all_of_them_flat(pipeline_run):
    run_dir, metrics, _, manifest = pipeline_run
    steps = manifest["steps"]
    mmlu = steps["mmlu"]["metrics"]
    assert mmlu["mmlu_questions"] == questions_in(SUBJECTS) == json.loads((run_dir / "mmlu.json").read_text())["questions"]
    assert mmlu["mmlu"] == pytest.approx(mmlu["mmlu_correct"] / mmlu["mmlu_questions"])
    quant = steps["quantize"]["metrics"]
    assert quant["calib_sequences"] == 4 and quant["perplexity_after"] > 0
    assert 8 < quant["effective_bits"] < 16  # FP8 weights, bf16 norms and embeddings
    assert steps["export"]["metrics"]["effective_bits"] == quant["effective_bits"]
    for key in ("mmlu", "perplexity_before", "perplexity_after", "effective_bits"):
        assert manifest["metrics"][key] == metrics[key]
    for step in ("quantize", "export"):  # both steps' effective_bits kept, none overwritten
        assert manifest["metrics"][f"{step}/effective_bits"] == steps[step]["metrics"]["effective_bits"]
    assert manifest["metrics"]["mmlu/mmlu"] == mmlu["mmlu"]
    assert metrics["pipeline_seconds"] >= sum(s["seconds"] for s in steps.values())
    assert manifest["quantization"]["format"] == "FP8_DEFAULT_CFG"


def test_a_failing_step_stops_the_pipeline_and_keeps_the_earlier_outputs(tmp_path, one_thread):
    cfg = compose_cfg("task=pipeline", *SMALL, "task.quantize.perplexity=false", "task.mmlu.subjects=[astronomy]",
                      "task.mmlu.lower_bound=0.99", f"run.output_dir={tmp_path}")
    with pytest.raises(RuntimeError, match=r"pipeline step 2/3 \(mmlu\) failed: AccuracyBelowBound") as err:
        counted_execute(cfg, tmp_path)
    assert err.value.loads == [None]
    manifest = read_manifest(tmp_path)
    assert manifest["status"] == "failed" and "pipeline step 2/3 (mmlu)" in manifest["error"]
    steps = manifest["steps"]
    assert [steps[s]["status"] for s in ("quantize", "mmlu", "export")] == ["completed", "failed", "pending"]
    assert "lower_bound" in steps["mmlu"]["error"]
    assert (tmp_path / "quantized" / "config.json").is_file() and manifest["outputs"]["saved_model"]
    assert (tmp_path / "mmlu.json").is_file()  # written before the bound failed the step
    assert manifest["metrics"]["mmlu_questions"] == questions_in(["astronomy"])
    assert not (tmp_path / "export").exists() and "export" not in manifest["outputs"]


def test_unknown_step_and_two_steps_writing_one_output_exit_2_before_anything_runs(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "optmodel", "task=pipeline", "task.steps=[quantize,mmlux,export]",
                           "task.quantize.export=true", f"run.output_dir={out}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "task.steps[1]: unknown value 'mmlux'. Did you mean mmlu?" in proc.stderr
    assert "Valid: distill, eval, export, finetune, generate, mmlu, prune, quantize." in proc.stderr
    assert ("task.quantize.export: steps quantize and export both write outputs.export (one run dir holds one of "
            "each). Fix: task.quantize.export=false, or drop a step.") in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "optmodel.json").exists()


def test_each_step_is_validated_as_its_own_task():
    found = problems("task.steps=[quantize,export]", "task.quantize.quant_cfg=nvfp4x", "task.quantize.kv_cache=fp9")
    assert any(p.startswith("task.quantize.quant_cfg: unknown value 'nvfp4x'") for p in found)
    assert any(p.startswith("task.quantize.kv_cache: unknown value 'fp9'") for p in found)
    cfg = resolve_run_config(compose_cfg("task=pipeline", "task.quantize.quant_cfg=nvfp4"))
    assert cfg.task.quantize.quant_cfg == "NVFP4_DEFAULT_CFG"  # the short name resolved as task=quantize does
    vllm = problems("task.steps=[quantize,export]", "task.quantize.quant_cfg=int4_awq", "task.export.deploy=vllm")
    assert len(vllm) == 1 and "task.export.deploy=vllm" in vllm[0] and "NVFP4_DEFAULT_CFG" in vllm[0]
    assert problems("task.steps=[quantize,export]", "task.quantize.quant_cfg=fp8", "task.export.deploy=vllm") == []


def test_chains_that_cannot_run_are_refused():
    first = problems("task.steps=[export]")
    assert first == ["task.steps[0]: export exports the model of an earlier run, and it is the first step. Fix: a "
                     "step before it that makes the model (e.g. task.steps=[quantize,export]), or run.load=<a run dir>."]
    twice = problems("task.steps=[quantize,mmlu,quantize]", f"task.mmlu.data_dir={SAMPLE}", "task.mmlu.subjects=[astronomy]")
    assert twice == ["task.steps[2]: quantize is already step 0; a step's settings live under task.quantize, so each "
                     "task runs once in a pipeline. Fix: drop the repeat, or run a second pipeline with "
                     "run.load=<this run dir>."]
    tp2 = problems("backend=megatron", "parallel=tp2", "run.world_size=2", "task.steps=[quantize,export]",
                   "task.quantize.export=false")  # an export step on megatron needs TP 1
    assert len(tp2) == 1 and tp2[0].startswith("parallel.tensor: export to Hugging Face needs parallel.tensor=1")
    assert problems("task.steps=[]")[0].startswith("task.steps: empty.")


def test_prune_then_distill_learns_from_the_input_model_and_saves_one_model():
    both = problems("task.steps=[prune,distill]", "task.prune.export_config.num_layers=2")
    assert both == ["task.prune.save_model: steps prune and distill both write outputs.saved_model (one run dir holds "
                    "one of each). Fix: task.prune.save_model=false, or drop a step."]
    overrides = ("task=pipeline", "task.steps=[prune,distill]", "task.prune.export_config.num_layers=2",
                 "task.prune.save_model=false")
    cfg = resolve_run_config(compose_cfg(*overrides))
    assert cfg.task.distill.teacher == str(Path(optmodel.__file__).parent / "assets" / "tiny_models" / "tiny_qwen3")
    assert config_problems(cfg) == []


def test_prune_then_distill_trains_the_pruned_model_in_memory_against_the_input_model(tmp_path, one_thread, capsys):
    cfg = compose_cfg("task=pipeline", "task.steps=[prune,distill]", "task.prune.export_config.num_layers=2",
                      "task.prune.save_model=false", "task.prune.depth_batches=1", "task.distill.training.max_steps=1",
                      "task.distill.training.micro_batch_size=2", "task.distill.training.global_batch_size=2",
                      *SMALL[:3], f"run.output_dir={tmp_path}")
    _, loads = counted_execute(cfg, tmp_path)
    manifest = read_manifest(tmp_path)
    ckpt = str(Path(optmodel.__file__).parent / "assets" / "tiny_models" / "tiny_qwen3")
    assert loads == [None, ckpt] and manifest["model_loads"] == 2 and manifest["other_model_loads"] == [ckpt]
    prune, distill = manifest["steps"]["prune"]["metrics"], manifest["steps"]["distill"]["metrics"]
    # the student is the pruned model handed over in memory; the teacher is the unpruned input
    assert distill["perplexity_before"] == pytest.approx(prune["perplexity_after"], rel=1e-6)
    assert distill["perplexity_teacher"] == pytest.approx(prune["perplexity_before"], rel=1e-6)
    assert json.loads((tmp_path / "model" / "config.json").read_text())["num_hidden_layers"] == 2
    assert manifest["model_config"]["num_layers"] == 2 and manifest["training"]["teacher"] == ckpt
    # the student is named as what it is: the input model as the prune step left it, not the checkpoint
    assert manifest["training"]["student"] == f"{ckpt} after prune (this pipeline)"
    assert f"  student     {ckpt} after prune (this pipeline)\n  teacher     {ckpt}\n" in capsys.readouterr().out


def test_a_steps_gate_and_the_pipelines_gate_keep_their_own_verdicts(tmp_path, one_thread):
    cfg = compose_cfg("task=pipeline", "task.steps=[quantize,export]", *SMALL[:3], f"run.output_dir={tmp_path}",
                      "task.quantize.gate.metric=perplexity", "task.quantize.gate.max_drop=50",
                      "task.gate.metric=perplexity", "task.gate.max_drop=40")
    counted_execute(cfg, tmp_path)
    manifest = read_manifest(tmp_path)
    step, whole = manifest["step_gates"]["quantize"], manifest["gate"]
    assert step["passed"] and whole["passed"] and (step["max_drop"], whole["max_drop"]) == (50, 40)
    assert step["value"] == whole["value"] == manifest["metrics"]["quantize/perplexity_after"]


def test_pipeline_config_error_of_a_step_stays_a_config_error():
    from optmodel.tasks.pipeline.run import step_error

    err = step_error(ConfigError(["task.data_dir: gone"]), 1, 3, "mmlu")
    assert isinstance(err, ConfigError) and err.problems == ["pipeline step 2/3 (mmlu): task.data_dir: gone"]
    interrupt = KeyboardInterrupt()
    assert step_error(interrupt, 0, 2, "quantize") is interrupt
