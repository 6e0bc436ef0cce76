"""fp32 master weights for every training task on backend=hf: with the model computing in
bf16, one optimizer step at lr 1e-5 changes the trainable weights (read in fp32 while the
optimizer holds them), the frozen teacher / target stays bf16, and the trained model comes back
in bf16. In bf16 weights such a step is below half a rounding step for most weights and is lost."""

from __future__ import annotations

import copy

import pytest
from omegaconf import OmegaConf

from optmodel.facts.paths import CORPUS_DIR, TINY_MODELS_DIR
from optmodel.training.config import DistillationConfig, TrainingConfig

pytestmark = pytest.mark.usefixtures("one_thread")

LR = 1e-5
TINY = TINY_MODELS_DIR / "tiny_qwen3"


def bf16_model():
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def rows():
    from transformers import AutoTokenizer

    from optmodel.data.sft import build_sft_dataset
    from optmodel.facts.records import read_records

    tok = AutoTokenizer.from_pretrained(TINY)
    return build_sft_dataset(tok, read_records(CORPUS_DIR / "train.txt", "train"), 32, "pack", 4)


class WeightsAfterFirstStep:
    """The trainable weights as the optimizer holds them after step 1, in fp32."""

    def __init__(self):
        from transformers import TrainerCallback

        owner = self
        self.weights, self.dtypes = {}, set()

        class _Cb(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kw):
                if state.global_step == 1:
                    for name, p in model.named_parameters():
                        if p.requires_grad:
                            owner.weights[name.removeprefix("_orig_mod.")] = p.detach().float().clone()
                            owner.dtypes.add(p.dtype)

        self.callback = _Cb()


def trainable_fp32(model):
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}


def changed_share(before, after) -> float:
    """Share of trainable weight elements that differ after the step."""
    changed = total = 0
    for name, b in before.items():
        a = after[name]
        changed += int((a != b).sum())
        total += b.numel()
    return changed / total


def assert_step_kept(before, snapshot):
    import torch

    common = {n: before[n] for n in before if n in snapshot.weights}
    assert len(common) == len(before), "the trainable weights after step 1 name the model's"
    share = changed_share(common, snapshot.weights)
    # AdamW's first step moves every weight with a gradient by ~lr; in bf16 weights ~93% stayed put (measured)
    assert share > 0.8, f"only {share:.1%} of the trainable weights changed in one step at lr {LR}"
    assert snapshot.dtypes == {torch.float32}, f"trainable weights held in {snapshot.dtypes}"


def fit_one_step(model, rows, tmp_path, teacher=None):
    from optmodel.training.loop import fit

    snapshot = WeightsAfterFirstStep()
    training = OmegaConf.structured(TrainingConfig(max_steps=1, micro_batch_size=4, global_batch_size=4, lr=LR,
                                                   warmup_steps=0, log_every=1))
    distillation = OmegaConf.structured(DistillationConfig()) if teacher is not None else None
    result = fit(model, training, rows, output_dir=tmp_path, seed=1, teacher=teacher, distillation=distillation,
                 extra_callbacks=[snapshot.callback])
    return result, snapshot


def quantized(model, rows):
    import modelopt.torch.quantization as mtq
    import torch

    def calibrate(m):
        with torch.no_grad():
            m(input_ids=rows.input_ids[:4])

    return mtq.quantize(model, copy.deepcopy(mtq.FP8_DEFAULT_CFG), calibrate)


@pytest.mark.parametrize("kind", ["sft", "kd", "qat", "qad"])
def test_one_small_step_changes_the_trainable_weights_under_bf16_compute(kind, rows, tmp_path):
    import torch

    student = bf16_model()
    if kind in ("qat", "qad"):
        student = quantized(student, rows)
    teacher = bf16_model() if kind in ("kd", "qad") else None
    before = trainable_fp32(student)
    result, snapshot = fit_one_step(student, rows, tmp_path, teacher)
    assert result.kind == kind
    assert result.metrics["train_compute_dtype"] == "bfloat16"
    assert_step_kept(before, snapshot)
    # after training: the model computes in bf16 again, the teacher was never upcast
    assert {p.dtype for p in result.model.parameters()} == {torch.bfloat16}
    if teacher is not None:
        assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}


def test_one_small_eagle3_step_changes_the_draft_under_bf16_compute(tmp_path):
    import torch
    from transformers import AutoTokenizer

    from conftest import compose_cfg
    from optmodel.speculative import workflow
    from optmodel.speculative.checkpoint import draft_trainer
    from optmodel.speculative.convert import DraftSpec, convert
    from optmodel.speculative.data import RowsDataset, collate
    from optmodel.training.loop import fit

    task = compose_cfg("task=eagle3", "task.num_conversations=8", "task.seq_len=32", "task.training.micro_batch_size=4",
                       "task.training.global_batch_size=4", f"task.training.lr={LR}", "task.training.max_steps=1",
                       "task.training.save_every=1", "task.training.log_every=1").task
    target, tok = bf16_model(), AutoTokenizer.from_pretrained(TINY)
    convert(target, DraftSpec.from_cfg(task))
    frozen = {n for n, p in target.named_parameters() if not p.requires_grad}
    assert frozen and all(not n.startswith("eagle_module") for n in frozen)
    before = trainable_fp32(target)
    snapshot = WeightsAfterFirstStep()
    target.train()
    fit(target, task.training, RowsDataset(workflow.conversation_rows(tok, task)), output_dir=tmp_path, seed=0,
        extra_callbacks=[snapshot.callback], trainer_class=draft_trainer(), data_collator=collate)  # as ops.fit_rows
    assert_step_kept(before, snapshot)
    assert {p.dtype for p in target.parameters()} == {torch.bfloat16}  # target never upcast, draft rounded back


# backend=megatron: megatron-core's bf16 optimizer (Float16OptimizerWithFloat16Params) keeps an
# fp32 main copy of every trainable weight and steps it; the model's bf16 weights are that copy
# rounded. One step at lr 1e-5 moves the main copy; rounded, most bf16 weights stay put.


def megatron_bf16(*overrides):
    from conftest import compose_cfg
    from optmodel.backends import megatron
    from optmodel.config.auto_model import resolve_auto_model

    cfg = compose_cfg("backend=megatron", "backend.device=cpu", "backend.dtype=bfloat16", *overrides)
    return megatron.load(resolve_auto_model(cfg))


def megatron_one_step(handle, rows, tmp_path, teacher=None):
    """fit_megatron for one step; the trainable weights as the optimizer holds them after it (fp32)."""
    from optmodel.training.megatron import fit_megatron

    after = {}

    def snapshot(step, steps):
        for name, p in handle.model.named_parameters():
            if p.requires_grad:
                held = getattr(p, "main_param", p)  # megatron's fp32 main copy of a bf16 weight
                after[name.split("module.")[-1]] = (held.detach().clone(), p.detach().float().clone())

    training = OmegaConf.structured(TrainingConfig(max_steps=1, micro_batch_size=4, global_batch_size=4, lr=LR,
                                                   warmup_steps=0, log_every=1))
    distillation = OmegaConf.structured(DistillationConfig()) if teacher is not None else None
    result = fit_megatron(handle, training, rows, output_dir=tmp_path, seed=1, teacher=teacher,
                          distillation=distillation, on_step=snapshot)
    return result, after


@pytest.mark.parametrize("kind", ["sft", "kd"])
def test_one_small_megatron_step_changes_the_fp32_main_weights_under_bf16_compute(kind, rows, tmp_path):
    import torch

    from megatron_training_workers import student_checkpoint

    # kd: a depth-pruned student (2 of 4 layers) learning from the bundled model, as task=distill does
    student = (megatron_bf16("model=auto", f"model.checkpoint={student_checkpoint(str(tmp_path / 'student'))}")
               if kind == "kd" else megatron_bf16())
    teacher = megatron_bf16() if kind == "kd" else None
    before = {n.split("module.")[-1]: p.detach().float().clone() for n, p in student.model.named_parameters()
              if p.requires_grad}
    result, after = megatron_one_step(student, rows, tmp_path / "checkpoints", teacher)
    assert result.kind == kind
    assert set(after) == set(before), "the trainable weights after step 1 name the model's"
    assert {held.dtype for held, _ in after.values()} == {torch.float32}, "the optimizer steps fp32 main weights"
    main_share = changed_share(before, {n: held for n, (held, _) in after.items()})
    rounded_share = changed_share(before, {n: model for n, (_, model) in after.items()})
    # Adam's first step moves every weight with a gradient by ~lr; rounded to bf16 most of it vanishes
    assert main_share > 0.75, f"only {main_share:.1%} of the fp32 main weights changed in one step at lr {LR}"
    assert rounded_share < main_share / 2, f"bf16 weights changed {rounded_share:.1%}, main {main_share:.1%}"
    assert {p.dtype for p in result.model.parameters() if p.requires_grad} == {torch.bfloat16}
    if teacher is not None:  # the frozen teacher keeps its dtype
        assert torch.bfloat16 in {p.dtype for p in teacher.model.parameters()}
