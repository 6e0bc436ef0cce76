"""The training layer on the bundled tiny models, real transformers Trainer + ModelOpt trainers:
distillation recovers a depth-pruned model, QAT / QAD beat PTQ, kill-and-resume is exact,
chat SFT data targets assistant tokens only, bad training settings fail validation."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from optmodel.data.sft import IGNORE_INDEX, build_sft_dataset, tokenize_record
from optmodel.facts.records import DataError, read_records
from optmodel.facts.paths import CORPUS_DIR, TINY_MODELS_DIR
from optmodel.training.config import DistillationConfig, TrainingConfig, distillation_problems, training_problems

sys.path.insert(0, str(Path(__file__).parent))
from training_workers import distil, tiny_models  # noqa: E402

WORKER = Path(__file__).parent / "training_workers.py"
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And three plus three?"},
    {"role": "assistant", "content": "Six, of course."},
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_MODELS_DIR / "tiny_qwen3")


@pytest.fixture(scope="module")
def corpus(tokenizer):
    from optmodel.data.text import pack

    train = build_sft_dataset(tokenizer, read_records(CORPUS_DIR / "train.txt", "train"), 64, "pack", 400)
    heldout = pack(tokenizer, read_records(CORPUS_DIR / "heldout.txt", "heldout"), 64, 32, "heldout")
    return train, heldout


def ppl(model, heldout) -> float:
    from optmodel.metrics import perplexity_of

    return perplexity_of(lambda ids: model(input_ids=ids).logits, heldout, 16, "cpu", "heldout")


def settings(**kw):
    base = dict(micro_batch_size=4, global_batch_size=4, lr=1e-4, warmup_steps=2, log_every=100)
    return OmegaConf.structured(TrainingConfig(**{**base, **kw}))


def test_chat_loss_mask_covers_assistant_tokens_only(tokenizer):
    ids, labels = tokenize_record(tokenizer, CHAT)
    targets = [t for t, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert all(label in (t, IGNORE_INDEX) for t, label in zip(ids, labels))
    # The targets are exactly each assistant reply followed by EOS, tokenized on their own.
    expected = []
    for turn in (m for m in CHAT if m["role"] == "assistant"):
        expected += tokenizer(turn["content"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert targets == expected
    decoded_prompt = tokenizer.decode([t for t, label in zip(ids, labels) if label == IGNORE_INDEX])
    assert "two plus two" in decoded_prompt and "Be brief" in decoded_prompt and "Four" not in decoded_prompt


def test_chat_records_cut_by_seq_len_are_counted(tokenizer):
    ids, labels = tokenize_record(tokenizer, CHAT)
    first_target = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    short = first_target + 1  # shorter than the record: the last answer is cut
    padded = build_sft_dataset(tokenizer, [CHAT] * 3 + ["plain text row"], short, "pad")
    assert padded.stats.truncated_chats == 3 and padded.stats.chat_records == 3
    assert padded.stats.dropped_tokens == 3 * (len(ids) - short)
    roomy = build_sft_dataset(tokenizer, [CHAT] * 3, len(ids), "pad")
    assert roomy.stats.truncated_chats == 0
    assert roomy.stats.target_tokens == 3 * sum(label != IGNORE_INDEX for label in labels[1:])


def test_chat_without_generation_markers_is_refused(tokenizer):
    plain = copy.copy(tokenizer)
    plain.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(DataError, match="generation"):
        tokenize_record(plain, CHAT)


def test_distillation_closes_most_of_the_gap_of_a_depth_pruned_model(corpus, tmp_path):
    from optmodel.training.loop import fit

    train, heldout = corpus
    teacher, student, _ = tiny_models(drop_layer=2)
    teacher_ppl, pruned_ppl = ppl(teacher, heldout), ppl(student, heldout)
    assert pruned_ppl > teacher_ppl * 1.05, "dropping a layer must cost perplexity for the test to mean anything"
    result = fit(student, settings(max_steps=40, lr=1e-3), train, output_dir=tmp_path, seed=1, teacher=teacher,
                 distillation=OmegaConf.structured(DistillationConfig()))
    assert result.kind == "kd"
    distilled = ppl(result.model, heldout)
    closed = (pruned_ppl - distilled) / (pruned_ppl - teacher_ppl)
    assert closed >= 0.5, f"teacher {teacher_ppl:.3f}, pruned {pruned_ppl:.3f}, distilled {distilled:.3f}"


def test_qat_and_qad_beat_ptq_for_nvfp4(corpus, tmp_path):
    import modelopt.torch.quantization as mtq
    import torch
    from transformers import AutoModelForCausalLM

    from optmodel.quantization import cpu_fakequant
    from optmodel.training.loop import fit

    train, heldout = corpus
    path = TINY_MODELS_DIR / "tiny_qwen3"
    cpu_fakequant.register()
    cfg = cpu_fakequant.route_to_cpu(mtq.NVFP4_DEFAULT_CFG)

    def ptq():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

        def calibrate(m):
            with torch.no_grad():
                m(input_ids=train.input_ids[:16])

        return mtq.quantize(model, copy.deepcopy(cfg), calibrate)

    ptq_ppl = ppl(ptq(), heldout)
    qat = fit(ptq(), settings(max_steps=12), train, output_dir=tmp_path / "qat", seed=1)
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    qad = fit(ptq(), settings(max_steps=12), train, output_dir=tmp_path / "qad", seed=1, teacher=teacher,
              distillation=OmegaConf.structured(DistillationConfig()))
    assert (qat.kind, qad.kind) == ("qat", "qad")
    qat_ppl, qad_ppl = ppl(qat.model, heldout), ppl(qad.model, heldout)
    assert qat_ppl < ptq_ppl and qad_ppl < ptq_ppl, f"PTQ {ptq_ppl:.4f}, QAT {qat_ppl:.4f}, QAD {qad_ppl:.4f}"


def test_intermediate_layer_pairs_train_through_a_distillation_model(corpus, tmp_path):
    from optmodel.training.loop import fit

    train, heldout = corpus
    teacher, student, tok = tiny_models()
    held = build_sft_dataset(tok, read_records(CORPUS_DIR / "heldout.txt", "h"), 64, "pack", 8)
    d = DistillationConfig(intermediate_layer_pairs=[["model.layers.1", "model.layers.1"], ["model.norm", "model.norm", "mse"]],
                           skip_lm_loss=False, kd_loss_scale=0.5)
    result = fit(student, settings(max_steps=6, lr=1e-3, log_every=2), train, held, output_dir=tmp_path, seed=1,
                 teacher=teacher, distillation=OmegaConf.structured(d))
    assert result.kind == "kd_layerwise"
    assert type(result.model).__name__ == "Qwen3ForCausalLM"  # exported back from the DistillationModel
    import modelopt.torch.opt as mto

    mto.enable_huggingface_checkpointing()  # as optmodel's save does
    result.model.save_pretrained(tmp_path / "saved")  # a plain HF model: no ModelOpt state of no modes beside it
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.json", "generation_config.json",
                                                                     "model.safetensors"]
    losses = [row["loss"] for row in result.history if "loss" in row]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.metrics["eval_perplexity"] == pytest.approx(ppl(result.model, held.input_ids), rel=0.02)


def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(tmp_path):
    import torch
    from safetensors.torch import load_file

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}

    def worker(out, *extra):
        return subprocess.run([sys.executable, str(WORKER), str(out), "8", "3", *extra], capture_output=True,
                              text=True, timeout=600, env=env)

    assert distil(tmp_path / "full", 8, 3) == 0  # uninterrupted, in this process
    killed = worker(tmp_path / "cut", "--kill-at", "5")
    assert killed.returncode == -9  # SIGKILL: no handler, no cleanup
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["checkpoint-3"]
    resumed = worker(tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed_from_step=3" in resumed.stdout
    a = load_file(tmp_path / "full" / "final" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = tiny_models()[1].state_dict()
    assert not torch.equal(a["model.layers.0.mlp.up_proj.weight"], start["model.layers.0.mlp.up_proj.weight"])


def test_training_settings_are_checked_before_loading():
    bad = OmegaConf.structured(TrainingConfig(max_steps=0, micro_batch_size=3, global_batch_size=16, lr_schedule="cosin"))
    problems = training_problems(bad, "task.training")
    assert any(p.startswith("task.training.max_steps:") for p in problems)
    assert any(p.startswith("task.training.global_batch_size:") and "Fix: task.training.global_batch_size=15" in p
               for p in problems)
    assert any(p.startswith("task.training.lr_schedule:") for p in problems)
    assert training_problems(OmegaConf.structured(TrainingConfig()), "task.training") == []
    d = OmegaConf.structured(DistillationConfig(intermediate_layer_pairs=[["model.layers.3", "model.layers.3"]]))
    problems = distillation_problems(d, "task.distillation", student_layers=3, teacher_layers=4)
    assert len(problems) == 1 and "student has 3 layers" in problems[0]
