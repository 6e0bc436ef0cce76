"""EAGLE3 on backend=megatron (ModelOpt's Megatron EAGLE on megatron-core's local spec, one
CPU gloo process): online training raises the acceptance length with the target frozen, the
draft exports in the hf layout and validates on either backend with the same AL, the feature
dump matches the hf one and either backend trains from either dump, and what megatron cannot
do is refused by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optmodel.checked import config_problems
from optmodel.facts.rundir import read_manifest
from optmodel.facts.paths import TINY_MODELS_DIR
from optmodel.run import execute

from conftest import compose_cfg

MEGATRON = ["backend=megatron", "backend.device=cpu", "backend.dtype=float32"]
# as tests/test_eagle3.py: 30 steps of 8 x 64 tokens at a high lr, AL on 3 prompts, 3 draft steps
FAST = ["task.training.lr=3e-3", "task.training.min_lr_ratio=0.0033", "task.training.max_steps=30",
        "task.seq_len=64", "task.training.save_every=30",
        "task.al_every=30", "task.draft_vocab_size=512", "task.acceptance.num_prompts=3",
        "task.acceptance.max_new_tokens=24", "task.acceptance.draft_steps=3", "run.seed=0"]
BATCH_4 = ["task.training.micro_batch_size=4", "task.training.global_batch_size=4"]
ACC = ["task.acceptance.num_prompts=3", "task.acceptance.max_new_tokens=24", "task.acceptance.draft_steps=3"]


@pytest.fixture(scope="module", autouse=True)
def megatron_world(one_thread):
    yield
    from optmodel.backends.megatron_world import destroy_model_parallel

    destroy_model_parallel()


@pytest.fixture(scope="module")
def online(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eagle3_megatron")
    return run_dir, execute(compose_cfg("task=eagle3", *MEGATRON, *FAST), run_dir)


def draft_task(al_every: int, seq_len: int, num_conversations: int, **training):
    """An eagle3 task config at lr 3e-3, 4 rows per step, with these task.training settings."""
    import dataclasses

    from omegaconf import OmegaConf

    from optmodel.tasks.eagle3.spec import Eagle3TaskConfig, eagle3_training

    settings = dataclasses.replace(eagle3_training(), lr=3e-3, micro_batch_size=4, global_batch_size=4, **training)
    return OmegaConf.structured(Eagle3TaskConfig(al_every=al_every, seq_len=seq_len, num_conversations=num_conversations,
                                                 training=settings))


def tensors(path: Path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_online_training_raises_acceptance_length(online):
    _, metrics = online
    assert metrics["al_before"] < metrics["al_after"] and metrics["al_after"] > 1.2


def test_training_lowers_the_draft_loss_and_leaves_the_target_unchanged():
    import torch

    from optmodel.backends import megatron
    from optmodel.speculative import workflow

    handle = megatron.load(compose_cfg(*MEGATRON))
    before = {k: v.clone() for k, v in handle.model.state_dict().items() if torch.is_tensor(v)}
    task = draft_task(al_every=0, seq_len=32, num_conversations=4, max_steps=8, save_every=100, log_every=1)
    import tempfile

    losses = []
    with tempfile.TemporaryDirectory() as run_dir:
        workflow.train_online(handle.eagle3(), handle.tokenizer, task, Path(run_dir), 0,
                              lambda row: losses.append(row["train/loss"]) if "train/loss" in row else None)
    # one batch of 4 rows, seen 8 times; the loss is ModelOpt's cross entropy to the target's
    # distribution, whose floor is the target's entropy
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.05, losses
    after = handle.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a target weight changed"
    trained = [n for n, p in handle.model.named_parameters() if p.requires_grad]
    assert trained and all(n.startswith("eagle_module.") for n in trained)


def test_draft_exports_in_the_hf_layout(online, tmp_path):
    """The same config keys, tensor names, shapes and dtypes as backend=hf's export of a draft
    of the same shape (ModelOpt's HF plugin, untrained)."""
    import torch
    from transformers import AutoModelForCausalLM

    from optmodel.speculative import draft
    from optmodel.speculative.convert import DraftSpec, convert

    run_dir, _ = online
    ours = Path(read_manifest(run_dir)["outputs"]["draft"])
    d2t = tensors(ours)["d2t"]
    hf = AutoModelForCausalLM.from_pretrained(TINY_MODELS_DIR / "tiny_qwen3", dtype=torch.float32)
    convert(hf, DraftSpec(draft_vocab_size=512), d2t=d2t)
    theirs = draft.export(hf, tmp_path / "hf_draft")
    mine, ref = tensors(ours), tensors(theirs)
    assert {k: (tuple(v.shape), v.dtype) for k, v in mine.items()} == {k: (tuple(v.shape), v.dtype) for k, v in ref.items()}
    conf, ref_conf = (json.loads((p / "config.json").read_text()) for p in (ours, theirs))
    assert set(conf) == set(ref_conf) and conf["eagle_config"] == ref_conf["eagle_config"]
    assert conf["rope_theta"] == ref_conf["rope_theta"] == 1e6  # the target's rope base, as trained


@pytest.mark.parametrize("backend", [[], MEGATRON], ids=["hf", "megatron"])
def test_draft_validates_with_the_same_acceptance_length(online, tmp_path, backend):
    run_dir, metrics = online
    out = execute(compose_cfg("task=validate", f"run.load={run_dir}", *backend, *ACC), tmp_path / "validate")
    assert out["acceptance_length"] == pytest.approx(metrics["al_after"], abs=0.02)


def test_an_mla_moe_target_trains_a_two_layer_draft_that_validates_alike_on_both_backends(tmp_path):
    """tiny_deepseek (MLA + MoE): the draft's heads equal its query groups, the case where the
    local attention would keep views of ModelOpt's key cache (megatron_compat, ModelOpt EAGLE);
    two draft layers: the second one's names differ between ModelOpt's two exporters."""
    import torch

    short = ["task.draft_layers=2", "task.training.max_steps=3", "task.training.lr=3e-3", "task.seq_len=32",
             "task.num_conversations=16", *BATCH_4, "task.al_every=0", "task.draft_vocab_size=512", "run.seed=0"]
    acc = ["task.acceptance.num_prompts=2", "task.acceptance.max_new_tokens=12", "task.acceptance.draft_steps=3"]
    execute(compose_cfg("task=eagle3", "model=tiny_deepseek", *MEGATRON, *short), tmp_path / "train")
    al = [execute(compose_cfg("task=validate", "model=tiny_deepseek", f"run.load={tmp_path / 'train'}", *backend, *acc),
                  tmp_path / f"validate{len(backend)}")["acceptance_length"] for backend in ([], MEGATRON)]
    assert al[0] == pytest.approx(al[1], abs=0.02)
    # the import into megatron inverts the export exactly: the attached draft exports the same tensors
    from optmodel.backends import megatron
    from optmodel.speculative.megatron_draft import draft_state_dict

    handle = megatron.load(compose_cfg("model=tiny_deepseek", *MEGATRON))
    draft = Path(read_manifest(tmp_path / "train")["outputs"]["draft"])
    handle.eagle3().attach(draft)
    again, exported = draft_state_dict(handle.model), tensors(draft)
    assert again.keys() == exported.keys() and all(torch.equal(again[k], exported[k].to(again[k].dtype)) for k in again)
    assert "layers.1.input_layernorm.weight" in again and "layers.1.hidden_norm.weight" not in again


def test_features_match_the_hf_dump_and_train_on_either_backend(tmp_path):
    import torch

    from optmodel.backends import hf, megatron
    from optmodel.speculative import workflow
    from optmodel.speculative.features import read_manifest as features_manifest

    cfg = compose_cfg("task=eagle3_features", "task.num_conversations=8", "task.seq_len=32", "task.shard_size=4")
    rows = None
    dirs = {}
    for name, handle in (("hf", lambda: hf.load(compose_cfg("backend.dtype=float32"))),
                         ("megatron", lambda: megatron.load(compose_cfg(*MEGATRON)))):
        h = handle()
        rows = rows or workflow.conversation_rows(h.tokenizer, cfg.task)
        dirs[name] = tmp_path / name
        h.eagle3().dump_features(rows, dirs[name], [0, 1], 4, str(TINY_MODELS_DIR / "tiny_qwen3"), 4)
    meta = {n: features_manifest(d) for n, d in dirs.items()}
    assert meta["hf"] == meta["megatron"]
    for shard in meta["hf"]["shards"]:
        a, b = (torch.load(d / shard["file"]) for d in dirs.values())
        assert set(a) == set(b) and all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
        valid = a["attention_mask"].bool()  # right padding: positions past a row's end are never trained
        for key in ("aux_hidden_states", "base_model_hidden_states"):
            assert (a[key][valid] - b[key][valid]).abs().max() < 1e-4
    # each backend trains from the other's dump
    for features, backend in ((dirs["megatron"], []), (dirs["hf"], MEGATRON)):
        out = execute(compose_cfg("task=eagle3", f"task.offline_data={features}", "task.training.max_steps=2",
                                  *BATCH_4, "task.al_every=0", *backend), tmp_path / f"offline{len(backend)}")
        draft = tmp_path / f"offline{len(backend)}" / "draft"
        assert out["train_steps"] == 2 and (draft / "model.safetensors").is_file()
        assert json.loads((draft / "config.json").read_text())["rope_theta"] == 1e6  # the target's rope base


def test_what_megatron_cannot_do_is_refused_naming_the_field():
    found = [p for p in config_problems(compose_cfg("task=eagle3", *MEGATRON, "parallel.pipeline=2", "run.world_size=2"))
             if not p.startswith("run.world_size")]
    assert len(found) == 1 and found[0].startswith("parallel.pipeline:"), found
    # bf16 weights train on CPU too (megatron-core's bf16 optimizer with fp32 main copies)
    assert config_problems(compose_cfg("task=eagle3", *MEGATRON, "backend.dtype=bfloat16")) == []


def test_a_draft_reading_layers_the_target_lacks_is_refused(online, tmp_path):
    import shutil

    run_dir, _ = online
    bad = tmp_path / "draft"
    shutil.copytree(Path(read_manifest(run_dir)["outputs"]["draft"]), bad)
    conf = json.loads((bad / "config.json").read_text())
    conf["eagle_config"]["eagle_aux_hidden_state_layer_ids"] = [1, 7]
    (bad / "config.json").write_text(json.dumps(conf))
    note = json.loads((bad / "optmodel_deploy.json").read_text())  # the ids as trained, whatever the engine
    note["trained_aux_layer_ids"] = [1, 7]
    (bad / "optmodel_deploy.json").write_text(json.dumps(note))
    found = config_problems(compose_cfg("task=validate", f"task.draft={bad}", *MEGATRON))
    assert len(found) == 1 and found[0].startswith("task.draft:") and "[7]" in found[0]


@pytest.fixture(scope="module")
def two_ranks(online, tmp_path_factory):
    """TP 2 online training, validation of its draft at TP 2, and PP 2 / TP 2 feature dumps, in two gloo processes."""
    from megatron_task_workers import spawn

    base = tmp_path_factory.mktemp("eagle3_megatron_2ranks")
    runs = {name: str(base / name) for name in ("tp2", "tp2_validate", "pp2_features", "tp2_features")}
    features = ["task=eagle3_features", *MEGATRON, "task.num_conversations=8", "task.seq_len=32", "task.shard_size=4"]
    scenarios = [
        ["tp2", ["task=eagle3", *MEGATRON, *FAST, "parallel=tp2"], runs["tp2"]],
        ["tp2_validate", ["task=validate", f"run.load={runs['tp2']}", *MEGATRON, *ACC, "parallel=tp2"],
         runs["tp2_validate"]],
        ["pp2_features", [*features, "parallel=export_pp"], runs["pp2_features"]],
        ["tp2_features", [*features, "parallel=tp2"], runs["tp2_features"]],
    ]
    return spawn(scenarios, str(base / "results.json")), runs


@pytest.mark.slow
def test_tensor_parallel_training_matches_one_process(online, two_ranks):
    run_dir, metrics = online
    results, runs = two_ranks
    assert results["tp2"]["train_loss"] == pytest.approx(metrics["train_loss"], abs=1e-4)
    assert results["tp2"]["al_after"] == pytest.approx(metrics["al_after"], abs=0.02)
    assert results["tp2_validate"]["acceptance_length"] == pytest.approx(results["tp2"]["al_after"], abs=0.02)
    one, two = (tensors(Path(read_manifest(d)["outputs"]["draft"])) for d in (run_dir, runs["tp2"]))
    assert set(one) == set(two) and all((one[k].float() - two[k].float()).abs().max() < 1e-4 for k in one)


@pytest.mark.slow
def test_pipeline_and_tensor_parallel_features_match_the_hf_dump(two_ranks, tmp_path):
    import torch

    from optmodel.speculative.features import read_manifest as features_manifest

    _, runs = two_ranks
    execute(compose_cfg("task=eagle3_features", "backend.dtype=float32", "task.num_conversations=8", "task.seq_len=32",
                        "task.shard_size=4"), tmp_path / "hf")
    theirs = Path(read_manifest(tmp_path / "hf")["outputs"]["features"])
    for layout in ("pp2_features", "tp2_features"):
        ours = Path(read_manifest(runs[layout])["outputs"]["features"])
        assert features_manifest(ours) == features_manifest(theirs), layout
        for shard in features_manifest(ours)["shards"]:
            a, b = (torch.load(d / shard["file"]) for d in (ours, theirs))
            valid = a["attention_mask"].bool()
            for key in ("aux_hidden_states", "base_model_hidden_states"):
                assert a[key].shape == b[key].shape and (a[key][valid] - b[key][valid]).abs().max() < 1e-4, layout


def test_a_killed_run_resumes_from_its_last_checkpoint_where_the_whole_run_went(tmp_path):
    """Checkpoints are the megatron training core's (draft, optimizer, scheduler): killed after
    step 3 with a checkpoint at step 2, the rerun trains step 3 again to the same loss."""
    from optmodel.backends import megatron
    from optmodel.speculative import workflow

    task = draft_task(al_every=0, seq_len=32, num_conversations=8, max_steps=3, save_every=2, log_every=1)

    class Killed(Exception):
        pass

    def train(run_dir, kill_at=None):
        handle = megatron.load(compose_cfg(*MEGATRON))
        losses = []

        def log(row):
            if "train/loss" in row:
                losses.append(row["train/loss"])
                if len(losses) == kill_at:
                    raise Killed

        try:
            workflow.train_online(handle.eagle3(), handle.tokenizer, task, run_dir, 0, log, resume=True)
        except Killed:
            pass
        return losses

    whole = train(tmp_path / "whole")
    assert len(train(tmp_path / "killed", kill_at=3)) == 3
    assert train(tmp_path / "killed") == whole[2:]  # step 3 again, from checkpoint-2
