"""task=distill / task=finetune end to end through optmodel.run.execute on the tiny models,
their validation before anything loads, and preemption (SIGTERM) saving a resumable checkpoint."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from optmodel.config.inherit import inherit_run_model
from optmodel.config.validate import ConfigError
from optmodel.checked import validate
from optmodel.manifest import Manifest
from optmodel.facts.rundir import read_manifest
from optmodel.facts.paths import TINY_MODELS_DIR
from optmodel.run import execute

from conftest import compose_cfg

sys.path.insert(0, str(Path(__file__).parent))
from training_workers import tiny_models  # noqa: E402

TINY = TINY_MODELS_DIR / "tiny_qwen3"
FAST = ("data.seq_len=64", "data.eval_max_sequences=16", "data.batch_size=8", "task.training.micro_batch_size=4",
        "task.training.global_batch_size=4", "task.training.lr=1e-3", "task.training.max_train_sequences=64")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    """A run dir as task=prune leaves it: the tiny Qwen3 with its third layer dropped, saved with
    a completed manifest naming the checkpoint it started from and the shape it produced."""
    run_dir = tmp_path_factory.mktemp("pruned")
    _, student, tok = tiny_models(drop_layer=2)
    student.save_pretrained(run_dir / "model")
    tok.save_pretrained(run_dir / "model")
    model_config = OmegaConf.to_container(compose_cfg().model, resolve=True)
    model_config["num_layers"] = 3
    manifest = Manifest(run_dir, task="prune", model="tiny_qwen3", input_checkpoint=str(TINY))
    manifest.update(outputs={"saved_model": str(run_dir / "model")}, model_config=model_config,
                    architecture={"num_layers": 3})
    manifest.finish("completed")
    return run_dir


def problems_of(*overrides):
    with pytest.raises(ConfigError) as err:
        validate(inherit_run_model(compose_cfg(*overrides)))  # as execute() does: run.load brings its shape
    return err.value.problems


def test_distill_a_pruned_run_from_the_model_it_came_from(pruned_run, tmp_path, capsys):
    run_dir = tmp_path / "distill"
    metrics = execute(compose_cfg("task=distill", f"run.load={pruned_run}", "task.training.max_steps=8", *FAST), run_dir)
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "completed" and manifest["training"]["kind"] == "kd"
    assert manifest["training"]["teacher"] == str(TINY)  # the default teacher: the pruned run's input checkpoint
    assert manifest["architecture"]["num_layers"] == 3 and manifest["model_config"]["num_layers"] == 3
    assert metrics["perplexity_teacher"] < metrics["perplexity_after"] < metrics["perplexity_before"]
    assert 0 < metrics["kl_teacher_after"] < metrics["kl_teacher_before"]  # the student moved toward the teacher
    assert metrics["train_steps"] == 8 and metrics["sft_train_sequences"] == 64
    assert metrics["train_tokens"] == 8 * 4 * 64 and manifest["training"]["student"] == str(pruned_run)
    saved = Path(manifest["outputs"]["saved_model"])
    assert json.loads((saved / "config.json").read_text())["num_hidden_layers"] == 3
    assert not (saved / "modelopt_state.pth").exists()  # a plain HF checkpoint
    # A later run loads the distilled student with the shape its manifest records.
    from optmodel.backends import load

    handle = load(compose_cfg("task=eval", f"run.load={run_dir}"))
    assert handle.architecture()["num_layers"] == 3
    # What a user reads at the end of the run, and in a sweep's summary of such runs.
    printed = capsys.readouterr().out
    m = metrics
    assert "8 steps (2048 tokens seen)" in printed
    assert f"student     {pruned_run}" in printed and f"teacher     {TINY}" in printed
    assert f"perplexity  {m['perplexity_before']:.3f} -> {m['perplexity_after']:.3f}" in printed
    assert f"KL          {m['kl_teacher_before']:.4f} -> {m['kl_teacher_after']:.4f}" in printed
    from optmodel.launch.summary import collect_rows, to_markdown

    row, = collect_rows(tmp_path)
    assert (row["student"], row["teacher"]) == (str(pruned_run), str(TINY))
    assert {k: row["metrics"][k] for k in ("train_steps", "train_tokens", "kl_teacher_before", "kl_teacher_after")} == {
        "train_steps": 8, "train_tokens": 2048, "kl_teacher_before": m["kl_teacher_before"],
        "kl_teacher_after": m["kl_teacher_after"]}
    head = to_markdown([row], ["train_steps", "train_tokens", "kl_teacher_after"]).splitlines()[0]
    assert head.startswith("| job | overrides | format | status | task | student | teacher | train_steps | train_tokens |")


def test_naming_the_model_a_pruned_run_came_from_is_refused_with_the_fix_that_works(pruned_run):
    with pytest.raises(ConfigError) as err:
        inherit_run_model(compose_cfg("model=tiny_qwen3", f"run.load={pruned_run}"), typed_model=True)
    first, *fields = err.value.problems
    assert "differs from model=tiny_qwen3 in 1 field(s) (the run changed it). Fix: leave model= out" in first
    assert "or model=tiny_qwen3" not in first  # what the user typed is not a fix
    assert fields == [f"model.num_layers: model=tiny_qwen3 says 4 but the run in {pruned_run} produced 3"]


def test_tokens_seen_leave_out_padding(pruned_run, tmp_path, capsys):
    """packing=pad: one paragraph per row, padded to seq_len; the padding is no token seen."""
    metrics = execute(compose_cfg("task=finetune", f"run.load={pruned_run}", "task.training.max_steps=2",
                                  "task.training.packing=pad", "task.perplexity=false", *FAST, "data.seq_len=256",
                                  "task.training.max_train_sequences=16"), tmp_path / "pad")
    real, rows = metrics["sft_train_tokens"], metrics["sft_train_sequences"]
    assert rows == 16 and real < rows * 256  # the bundled paragraphs are shorter than 256 tokens
    assert metrics["train_tokens"] == round(2 * 4 * real / rows) < 2 * 4 * 256
    assert f"2 steps ({metrics['train_tokens']} tokens seen)" in capsys.readouterr().out


def test_qat_from_a_fresh_nvfp4_ptq_saves_a_restorable_quantized_model_and_export(tmp_path):
    run_dir = tmp_path / "qat"
    metrics = execute(compose_cfg("task=finetune", "task.quant_cfg=NVFP4_DEFAULT_CFG", "task.calib_sequences=8",
                                  "task.training.max_steps=4", "task.training.lr=1e-4", *FAST), run_dir)
    manifest = read_manifest(run_dir)
    assert manifest["training"]["kind"] == "qat" and manifest["quantization"]["format"] == "NVFP4_DEFAULT_CFG"
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    hf_quant = json.loads((run_dir / "export" / "hf_quant_config.json").read_text())
    assert hf_quant["quantization"]["quant_algo"] == "NVFP4"
    from optmodel.backends import load
    from optmodel.training.trainers import is_quantized

    assert is_quantized(load(compose_cfg("task=eval", f"run.load={run_dir}")).model)


def test_validation_names_teacher_batch_resume_and_backend_problems(pruned_run, tmp_path):
    found = problems_of("task=distill", "task.training.global_batch_size=10", "task.training.micro_batch_size=4",
                        "run.resume=true", "task.distillation.intermediate_layer_pairs=[[model.layers.3,model.layers.3]]")
    assert any(p.startswith("task.teacher:") for p in found)  # no run.load manifest to take a teacher from
    assert any(p.startswith("task.training.global_batch_size:") for p in found)
    assert any(p.startswith("run.resume:") for p in found)
    found = problems_of("task=distill", f"run.load={pruned_run}",
                        "task.distillation.intermediate_layer_pairs=[[model.layers.3,model.layers.3]]")
    assert found == [p for p in found if "student has 3 layers" in p] and len(found) == 1
    other = tmp_path / "other_vocab"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**json.loads((TINY / "config.json").read_text()), "vocab_size": 2048}))
    found = problems_of("task=distill", f"task.teacher={other}", f"run.load={pruned_run}")
    assert len(found) == 1 and found[0].startswith("task.teacher:") and "2048 tokens" in found[0]
    # backend=megatron trains; hf's bf16 autocast is refused there with the fix
    found = problems_of("task=distill", "backend=megatron", "backend.dtype=float32", "task.training.bf16=true",
                        f"task.teacher={TINY}")
    assert len(found) == 1 and found[0].startswith("task.training.bf16:") and "backend.dtype=bfloat16" in found[0]
    # bf16 weights train on CPU too, with megatron-core's fp32 main copy (tests/test_master_weights.py)
    validate(compose_cfg("task=distill", "backend=megatron", "backend.device=cpu", "backend.dtype=bfloat16",
                         f"task.teacher={TINY}"))
    found = problems_of("task=distill", "backend=megatron", "backend.dtype=float32", f"task.teacher={TINY}",
                        "task.distillation.intermediate_layer_pairs=[[model.layers.1,decoder.layers.1]]")
    assert len(found) == 1 and "'model.layers.1' is not a megatron-core module name" in found[0], found
    found = problems_of("task=distill", "backend=megatron", "backend.dtype=float32", "parallel=tp2", "run.world_size=4",
                        f"task.teacher={TINY}",
                        "task.training.micro_batch_size=4", "task.training.global_batch_size=4")
    # TP 2 of 4 ranks leaves 2 data-parallel ranks: a global batch of 4 is not 4 x 2
    assert len(found) == 1 and "micro_batch_size x data-parallel ranks = 4 x 2" in found[0], found


def test_quantized_teacher_is_refused_unless_intended(tmp_path):
    teacher = tmp_path / "quantized_run"
    teacher.mkdir()
    manifest = Manifest(teacher, task="quantize", model="tiny_qwen3", input_checkpoint=str(TINY))
    (teacher / "quantized").mkdir()
    (teacher / "quantized" / "config.json").write_text((TINY / "config.json").read_text())
    (teacher / "quantized" / "modelopt_state.pth").write_bytes(b"")  # a quantized save holds its ModelOpt state
    manifest.update(outputs={"saved_model": str(teacher / "quantized")}, quantization={"format": "INT4_AWQ_CFG"})
    manifest.finish("completed")
    found = problems_of("task=distill", f"task.teacher={teacher}")
    assert any(p.startswith("task.teacher:") and "INT4_AWQ_CFG" in p and "allow_quantized_teacher" in p for p in found)
    validate(compose_cfg("task=distill", f"task.teacher={teacher}", "task.allow_quantized_teacher=true"))


def test_sigterm_saves_a_checkpoint_at_the_step_end_and_resume_finishes(tmp_path):
    from transformers import TrainerCallback

    from optmodel.data.sft import build_sft_dataset
    from optmodel.facts.records import read_records
    from optmodel.facts.paths import CORPUS_DIR
    from optmodel.training.callbacks import Preempted
    from optmodel.training.checkpoints import is_complete
    from optmodel.training.config import TrainingConfig
    from optmodel.training.loop import fit

    _, student, tok = tiny_models()
    train = build_sft_dataset(tok, read_records(CORPUS_DIR / "train.txt", "t"), 64, "pack", 32)
    training = OmegaConf.structured(TrainingConfig(max_steps=5, micro_batch_size=4, global_batch_size=4, lr=1e-3))

    class TermAt2(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 2:  # mid-step 3: the signal arrives while a step runs
                os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(Preempted, match="after step 3"):
            fit(student, training, train, output_dir=tmp_path, seed=1, extra_callbacks=[TermAt2()])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-3"] and is_complete(tmp_path / "checkpoint-3")
    _, fresh, _ = tiny_models()
    result = fit(fresh, training, train, output_dir=tmp_path, seed=1, resume=True)
    assert result.metrics["train_resumed_from_step"] == 3 and result.metrics["train_steps"] == 5


def test_qad_needs_no_teacher_the_model_before_quantization_is_it(pruned_run, tmp_path):
    from optmodel.tasks.distill.spec import teacher_source

    # a quantize run of the pruned model: its manifest names the model it quantized
    import shutil

    quant = tmp_path / "quantize_run"
    quant.mkdir()
    manifest = Manifest(quant, task="quantize", model="tiny_qwen3", input_checkpoint=str(pruned_run / "model"))
    shutil.copytree(pruned_run / "model", quant / "quantized")
    (quant / "quantized" / "modelopt_state.pth").write_bytes(b"")
    manifest.update(outputs={"saved_model": str(quant / "quantized")}, quantization={"format": "FP8_DEFAULT_CFG"},
                    model_config=read_manifest(pruned_run)["model_config"])
    manifest.finish("completed")
    cfg = inherit_run_model(compose_cfg("task=distill", f"run.load={quant}"))
    validate(cfg)
    assert teacher_source(cfg) == str(pruned_run / "model")
    # PTQ in this run (task.quant_cfg), no run.load: the checkpoint it loads, before quantization
    cfg = compose_cfg("task=distill", "task.quant_cfg=FP8_DEFAULT_CFG")
    validate(cfg)
    assert teacher_source(cfg) == str(TINY)
