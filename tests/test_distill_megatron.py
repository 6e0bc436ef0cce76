"""task=distill on backend=megatron in two CPU gloo processes, at TP 2, at PP 2 and at DP 2.

The student is the bundled tiny Qwen3 depth-pruned 4 -> 2 layers, the teacher the model it
came from. One spawn runs every layout through optmodel.run.execute (megatron-core's
schedule, DDP and optimizer; ModelOpt's Megatron distillation plugin), then restores each
run's saved model with run.load and scores the held-out text again; a copy of the PP 2 run
left as a kill during its last checkpoint write leaves it is resumed (run.resume=true).
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from optmodel.facts.paths import TINY_MODELS_DIR

sys.path.insert(0, str(Path(__file__).parent))
from megatron_training_workers import spawn, student_checkpoint  # noqa: E402

STEPS, SAVE_EVERY = 4, 2
LAYER_PAIR = ["task.distillation.intermediate_layer_pairs=[[decoder.layers.1,decoder.layers.3]]",
              "task.distillation.skip_lm_loss=false"]
# dp2: two model replicas, each its half of every global batch (megatron DDP's gradient all-reduce)
LAYOUTS = {"tp2": ["parallel=tp2"], "pp2": ["parallel=export_pp"], "dp2": ["parallel=single"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("distill_megatron")
    student = student_checkpoint(str(base / "student"))
    common = ["task=distill", "model=auto", f"model.checkpoint={student}",
              f"task.teacher={TINY_MODELS_DIR / 'tiny_qwen3'}", "backend=megatron", "backend.device=cpu",
              "backend.dtype=float32", "run.world_size=2", "data.seq_len=64", "data.eval_max_sequences=4",
              "data.batch_size=4", "task.training.micro_batch_size=2", "task.training.global_batch_size=4",
              "task.training.lr=1e-3", "task.training.max_train_sequences=16", f"task.training.max_steps={STEPS}",
              f"task.training.save_every={SAVE_EVERY}", "task.training.log_every=1"]
    scenarios = [[name, overrides, str(base / name), None] for name, overrides in LAYOUTS.items()]
    # intermediate pair + LM loss kept (megatron module names); perplexity scoring skipped
    scenarios.append(["tp2_layers", [*LAYOUTS["tp2"], *LAYER_PAIR, "task.perplexity=false"], str(base / "tp2_layers"),
                      None])
    # the resumed run is compared through its restored model: its own before / after scoring is skipped
    scenarios.append(["pp2_resumed", [*LAYOUTS["pp2"], "task.perplexity=false"], str(base / "pp2_resumed"),
                      str(base / "pp2")])
    return base, spawn(scenarios, common, str(base / "results.json"))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_kd_loss_falls_and_the_student_moves_toward_the_teacher(runs, layout):
    _, results = runs
    run = results[layout]
    kd = [row["kd_loss"] for row in run["history"] if "kd_loss" in row]
    assert len(kd) == STEPS
    assert kd[-1] < kd[0], f"{layout}: KD loss per step {kd}"
    # skip_lm_loss (the default): the trained loss is the logits KL alone, a KL is >= 0
    assert all(row["lm_loss"] == 0.0 and row["logits_loss"] >= 0 and row["kd_loss"] == pytest.approx(row["logits_loss"])
               for row in run["history"] if "kd_loss" in row)
    m = run["metrics"]
    assert m["perplexity_teacher"] < m["perplexity_after"] < m["perplexity_before"], m
    assert m["train_steps"] == STEPS and m["train_kind"] == "kd"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_saved_student_restores_with_its_trained_weights(runs, layout):
    _, results = runs
    run = results[layout]
    assert run["layers"] == 2
    m = run["metrics"]
    assert math.isclose(run["reloaded_perplexity"], m["perplexity_after"], rel_tol=1e-5)
    # the schedule's held-out LM loss (vocab-parallel cross entropy) and the handle's gathered logits agree
    assert math.isclose(m["eval_perplexity"], m["perplexity_after"], rel_tol=1e-4), m


@pytest.mark.parametrize("layout", LAYOUTS)
def test_checkpoints_every_save_every_steps_are_complete_distributed_checkpoints(runs, layout):
    base, _ = runs
    folder = base / layout / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"checkpoint-{s}" for s in range(SAVE_EVERY, STEPS + 1, SAVE_EVERY)]
    for ckpt in folder.iterdir():
        assert (ckpt / "optmodel_complete").read_text().strip() == ckpt.name.split("-")[1]
        assert json.loads((ckpt / "metadata.json").read_text())["sharded_backend"] == "torch_dist"
        common = torch.load(ckpt / "common.pt", weights_only=False)  # optimizer / scheduler state beside the shards
        assert common["step"] == int(ckpt.name.split("-")[1]) and common["scheduler"]["num_steps"] == common["step"]
        assert sorted(common["optimizer"]) == ["param_groups", "state"]
        if layout != "dp2":  # both model-parallel ranks wrote their shards
            assert sorted(p.name for p in ckpt.glob("*.distcp")) == ["__0_0.distcp", "__0_1.distcp",
                                                                     "__1_0.distcp", "__1_1.distcp"]


def test_resume_after_a_kill_during_a_checkpoint_write_ends_where_the_uninterrupted_run_did(runs):
    base, results = runs
    straight, resumed = results["pp2"], results["pp2_resumed"]
    # checkpoint-4 lost its completion marker: the resume starts after step 2, from checkpoint-2
    assert resumed["metrics"]["train_resumed_from_step"] == SAVE_EVERY
    assert [row["step"] for row in resumed["history"]] == list(range(SAVE_EVERY + 1, STEPS + 1))
    again = {row["step"]: row["kd_loss"] for row in resumed["history"]}
    assert again == {row["step"]: row["kd_loss"] for row in straight["history"] if row["step"] > SAVE_EVERY}
    # same weights at the end: the same held-out perplexity from the restored model, to the last bit
    assert resumed["reloaded_perplexity"] == straight["reloaded_perplexity"]
    assert (base / "pp2_resumed" / "checkpoints" / f"checkpoint-{STEPS}" / "optmodel_complete").is_file()


def test_layer_pairs_with_the_lm_loss_kept_add_a_cosine_loss_and_keep_the_logits_kl(runs):
    _, results = runs
    plain, layered = results["tp2"]["history"], results["tp2_layers"]["history"]
    # step 1 runs on the untrained student: the logits KL is the logits-only run's, untouched by
    # the LM loss computed beside it (megatron's cross entropy works in place on fp32 logits)
    assert layered[0]["logits_loss"] == pytest.approx(plain[0]["logits_loss"], rel=1e-5)
    for row in layered:
        assert 0 < row["intermediate_loss"] < 2  # 1 - cosine per token
        # ModelOpt's balancer: LM loss + kd_loss_scale (1) x the KD loss scaled to the LM loss's size
        assert row["lm_loss"] > 0 and row["kd_loss"] == pytest.approx(2 * row["lm_loss"], rel=1e-4)
    assert results["tp2_layers"]["layers"] == 2
