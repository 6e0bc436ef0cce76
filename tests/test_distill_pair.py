"""The bundled teacher / student pair (tiny_qwen3_teacher, depth-pruned 8 -> 4): distillation
beats fine-tuning at equal tokens, the builder still makes the shipped teacher, and the
"recovered" share is given only where it means something."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from optmodel.facts.paths import TINY_MODELS_DIR
from optmodel.run import execute
from optmodel.training.recovery import recovered

from conftest import compose_cfg

TEACHER = "tiny_qwen3_teacher"
SMALL = ("data.seq_len=128", "data.eval_max_sequences=16", "data.batch_size=8", "data.num_samples=8")
# the same optimizer steps, batch and sequence length (equal tokens) for both students
STUDENT = ("task.training.max_steps=12", "task.training.micro_batch_size=4", "task.training.global_batch_size=4",
           "task.training.lr=1e-3", "task.training.warmup_steps=2", "task.training.max_train_sequences=48")


def test_recovered_is_a_share_only_between_the_student_and_a_better_teacher():
    assert recovered(before=6.0, after=5.0, teacher=4.0) == (0.5, "")
    assert recovered(before=6.0, after=6.0, teacher=4.0)[0] == 0.0
    share, why = recovered(before=3.2, after=3.0, teacher=4.4)  # the teacher is worse than the student
    assert share is None and "teacher (4.400) is not better" in why
    share, why = recovered(before=6.0, after=3.0, teacher=4.0)  # beyond the teacher: no bound, no share
    assert share is None and "better than its teacher" in why
    share, why = recovered(before=6.0, after=6.5, teacher=4.0)
    assert share is None and "got worse" in why


def test_the_builder_replays_the_shipped_teacher(one_thread):
    """Same spec, same first steps: the seed, the fresh training text, the schedule and the
    architecture the builder has now are the ones that made the shipped weights."""
    import torch

    from optmodel.tinybuild.models import FIRST_LOSSES, TRAIN_SPECS, first_losses


    info = json.loads((TINY_MODELS_DIR / TEACHER / "train_info.json").read_text())
    assert info["train_spec"] == asdict(TRAIN_SPECS[TEACHER])
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        replay = first_losses(TEACHER)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(1)
    assert len(replay) == FIRST_LOSSES == len(info["first_losses"])
    # bit-for-bit on the machine that built it; other CPUs' kernels may round differently
    assert replay == pytest.approx(info["first_losses"], abs=2e-3)


@pytest.fixture(scope="module")
def pair_runs(tmp_path_factory, one_thread):
    """The Minitron steps on the bundled pair as a user runs them: prune 8 -> 4 layers, then
    finetune and distill the pruned run with the same steps and tokens."""
    out = tmp_path_factory.mktemp("pair")
    model = f"model={TEACHER}"
    execute(compose_cfg(model, "task=prune", "task.export_config.num_layers=4", *SMALL), out / "pruned")
    student = (model, f"run.load={out / 'pruned'}", *SMALL, *STUDENT)
    finetune = execute(compose_cfg("task=finetune", *student), out / "finetune")
    distill = execute(compose_cfg("task=distill", *student), out / "distill")
    return out, finetune, distill


def test_distill_beats_finetune_at_equal_tokens_on_perplexity_and_kl(pair_runs):
    from optmodel.backends import load
    from optmodel.training.teacher_kl import handle_kl

    out, finetune, distill = pair_runs
    assert finetune["train_tokens"] == distill["train_tokens"] == 12 * 4 * 128
    # the pair can show distillation: fine-tuning the pruned student leaves it short of the teacher
    assert distill["perplexity_teacher"] < finetune["perplexity_after"] < finetune["perplexity_before"]
    assert distill["perplexity_teacher"] < distill["perplexity_after"] < finetune["perplexity_after"]
    assert 0 < distill["perplexity_recovered"] < 1
    teacher = load(compose_cfg(f"model={TEACHER}", "task=eval"))
    finetuned = load(compose_cfg(f"model={TEACHER}", "task=eval", f"run.load={out / 'finetune'}"))
    from optmodel.data.text import dataset_texts, pack

    cfg = compose_cfg(*SMALL)
    heldout = pack(teacher.tokenizer, dataset_texts(cfg.data, "eval"), 128, 16, "data.eval_path")
    kl_finetune = handle_kl(finetuned, teacher, heldout, 8)
    assert distill["kl_teacher_after"] < kl_finetune < distill["kl_teacher_before"]
