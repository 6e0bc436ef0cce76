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
