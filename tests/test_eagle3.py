"""EAGLE3 on the bundled tiny target with real ModelOpt: online training raises the
acceptance length, offline training from dumped features gives the same kind of draft,
a killed features dump resumes, the exported draft reloads with the same AL, and bad
settings are refused at validation naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optmodel.checked import config_problems, override_problems, validate
from optmodel.config.validate import ConfigError
from optmodel.facts.rundir import read_manifest
from optmodel.tasks.eagle3.spec import RENAMED
from optmodel.run import execute

from conftest import compose_cfg

TINY_QWEN3 = Path(__file__).resolve().parent.parent / "optmodel" / "assets" / "tiny_models" / "tiny_qwen3"

# Short CPU training: a high lr (the 5e-5 default needs thousands of steps), 30 steps of
# 8 x 64 tokens; AL on 3 bundled prompts, 24 new tokens, 3 draft steps, greedy, seed 0.
FAST = ["task.training.lr=3e-3", "task.training.min_lr_ratio=0.0033", "task.training.max_steps=30",
        "task.seq_len=64", "task.training.save_every=30",
        "task.al_every=30", "task.draft_vocab_size=512", "task.acceptance.num_prompts=3",
        "task.acceptance.max_new_tokens=24", "task.acceptance.draft_steps=3", "run.seed=0", "task.deploy=vllm"]
ACC = ["task.acceptance.num_prompts=3", "task.acceptance.max_new_tokens=24", "task.acceptance.draft_steps=3"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add contention
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def online(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eagle3_online")
    metrics = execute(compose_cfg("task=eagle3", *FAST), run_dir)
    return run_dir, metrics


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eagle3_features")
    execute(compose_cfg("task=eagle3_features", "task.num_conversations=24", "task.seq_len=64",
                        "task.shard_size=8"), run_dir)
    return Path(read_manifest(run_dir)["outputs"]["features"])


def draft_tensors(draft: Path):
    from safetensors.torch import load_file

    return load_file(str(draft / "model.safetensors"))


def test_online_training_raises_acceptance_length(online):
    run_dir, metrics = online
    assert metrics["al_before"] < metrics["al_after"]
    assert metrics["al_after"] > 1.2
    history = read_manifest(run_dir)["metrics"]["al_history"]
    assert [h["step"] for h in history] == [0, 30]
    assert metrics["train_tokens_per_second"] > 0
    data = read_manifest(run_dir)["data"]  # the bundled 320 conversations at 64 tokens: many cut
    assert data["rows_read"] == 320 and data["rows_used"] + sum(data["dropped"].values()) == 320
    assert data["truncated"] > 0 and data["tokens_cut"] > data["truncated"]


def test_summary_names_draft_and_target_with_tokens_seen(online, tmp_path):
    from optmodel.facts.paths import TINY_MODELS_DIR
    from optmodel.launch.summary import collect_rows

    run_dir, metrics = online
    task = compose_cfg("task=eagle3", *FAST).task
    # tokens seen are the rows' real tokens: the padding of the shorter conversations is not counted
    data = read_manifest(run_dir)["data"]
    assert data["tokens"] < data["rows_used"] * task.seq_len
    per_step = task.training.global_batch_size * data["tokens"] / data["rows_used"]
    assert metrics["train_tokens"] == round(task.training.max_steps * per_step)
    (tmp_path / "0").symlink_to(run_dir)  # a sweep dir holding this run as its job 0
    row, = collect_rows(tmp_path)
    assert Path(row["student"]).resolve() == (run_dir / "draft").resolve()
    assert Path(row["teacher"]).resolve() == (TINY_MODELS_DIR / "tiny_qwen3").resolve()
    assert row["metrics"]["train_tokens"] == metrics["train_tokens"]


def test_exported_draft_names_eagle3_and_draft_vocab(online):
    run_dir, _ = online
    draft = Path(read_manifest(run_dir)["outputs"]["draft"])
    conf = json.loads((draft / "config.json").read_text())
    assert conf["architectures"] == ["LlamaForCausalLMEagle3"]
    assert conf["draft_vocab_size"] == 512 and conf["vocab_size"] == 1024
    w = draft_tensors(draft)
    assert tuple(w["lm_head.weight"].shape) == (512, 128)  # draft vocab x target hidden
    # three aux layers (the outputs of layers 0, 1, 2; vLLM numbers them 1, 2, 3) -> fc maps 3 x 128 to 128
    assert conf["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [1, 2, 3]
    assert tuple(w["fc.weight"].shape) == (128, 384)
    import torch

    target_ids = w["d2t"] + torch.arange(512)
    assert len(set(target_ids.tolist())) == 512 and 0 <= target_ids.min() and target_ids.max() < 1024


def test_draft_vocab_holds_the_most_frequent_tokens(online):
    """An independent count over the bundled conversations: every token seen more often than
    the 512th most frequent one is in the draft vocabulary."""
    from collections import Counter

    import torch
    from transformers import AutoTokenizer

    from optmodel.speculative.data import BUNDLED_CONVERSATIONS

    run_dir, _ = online
    tok = AutoTokenizer.from_pretrained(TINY_QWEN3)
    counts = Counter()
    for line in BUNDLED_CONVERSATIONS.read_text().splitlines():
        ids = tok.apply_chat_template(json.loads(line)["messages"], tokenize=True, return_dict=True)["input_ids"]
        counts.update(ids[:64])
    ranked = counts.most_common()
    threshold = ranked[511][1] if len(ranked) >= 512 else 0
    must = {t for t, c in ranked if c > threshold}
    t2d = torch.load(run_dir / "draft_vocab" / "t2d.pt")
    assert must <= set(torch.nonzero(t2d).flatten().tolist())


def test_validate_reloads_exported_draft_with_same_al(online, tmp_path):
    run_dir, metrics = online
    out = execute(compose_cfg("task=validate", f"run.load={run_dir}", *ACC), tmp_path / "validate")
    assert out["acceptance_length"] == pytest.approx(metrics["al_after"])
    saved = json.loads((tmp_path / "validate" / "acceptance.json").read_text())
    # AL = 1 (the target's token) + accepted drafts per step, up to the answers' ends
    assert saved["acceptance_length"] <= 1 + sum(saved["per_position"]) + 1e-9
    assert out["acceptance_rate"] == pytest.approx(out["acceptance_length"] / 3)


def test_offline_draft_matches_online_layout(online, features_dir, tmp_path):
    run_dir, _ = online
    out_dir = tmp_path / "offline"
    execute(compose_cfg("task=eagle3", f"task.offline_data={features_dir}", *FAST[:1], "task.training.max_steps=4",
                        "task.training.save_every=4", "task.al_every=0", "task.draft_vocab_size=512", "task.deploy=vllm"), out_dir)
    online_draft = Path(read_manifest(run_dir)["outputs"]["draft"])
    offline_draft = Path(read_manifest(out_dir)["outputs"]["draft"])
    on, off = draft_tensors(online_draft), draft_tensors(offline_draft)
    assert {k: tuple(v.shape) for k, v in on.items()} == {k: tuple(v.shape) for k, v in off.items()}
    on_conf = json.loads((online_draft / "config.json").read_text())
    off_conf = json.loads((offline_draft / "config.json").read_text())
    assert set(on_conf) == set(off_conf) and on_conf["eagle_config"] == off_conf["eagle_config"]


def test_killed_features_dump_resumes_without_redoing_shards(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optmodel.speculative import features
    from optmodel.speculative.data import BUNDLED_CONVERSATIONS, conversations, token_rows

    path = TINY_QWEN3
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    rows = list(token_rows(tok, conversations(BUNDLED_CONVERSATIONS, 20), 32))
    calls = []

    def die_on_third(module, args):  # a kill while the third shard is computed
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    hook = model.register_forward_pre_hook(die_on_third)
    with pytest.raises(KeyboardInterrupt):
        features.dump(model, rows, tmp_path, [0, 1], shard_size=4, target=str(path), batch_size=4)
    hook.remove()
    meta = features.read_manifest(tmp_path)
    assert [s["file"] for s in meta["shards"]] == ["shard_00000.pt", "shard_00001.pt"] and not meta["complete"]
    kept = {n: (tmp_path / n).stat().st_mtime_ns for n in ("shard_00000.pt", "shard_00001.pt")}
    calls.clear()
    hook = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    meta, written = features.dump(model, rows, tmp_path, [0, 1], shard_size=4, target=str(path), batch_size=4)
    assert written == ["shard_00002.pt", "shard_00003.pt", "shard_00004.pt"] and len(calls) == 3
    assert {n: (tmp_path / n).stat().st_mtime_ns for n in kept} == kept
    assert meta["complete"] and sum(s["rows"] for s in meta["shards"]) == 20
    shard = torch.load(tmp_path / "shard_00004.pt")
    # two aux layers of hidden 128 concatenated; the final hidden state once
    assert tuple(shard["aux_hidden_states"].shape) == (4, 32, 256)
    assert tuple(shard["base_model_hidden_states"].shape) == (4, 32, 128)


@pytest.mark.parametrize("overrides, field", [
    (["task.aux_layer_ids=[4]"], "task.aux_layer_ids"),
    (["task.draft_vocab_size=2048"], "task.draft_vocab_size"),
    (["task.ttt_steps=0"], "task.ttt_steps"),
    (["task.conversations=/no/such.jsonl"], "task.conversations"),
    (["task.offline_data=/no/such/dir"], "task.offline_data"),
])
def test_bad_settings_refused_naming_the_field(overrides, field):
    problems = config_problems(compose_cfg("task=eagle3", *overrides))
    assert len(problems) == 1 and problems[0].startswith(field + ":")


@pytest.mark.parametrize("old, new", [(f"task.{k}", v[0]) for k, v in RENAMED.items()])
def test_an_option_eagle3_had_before_the_shared_training_config_is_refused_naming_its_field(old, new):
    problems = override_problems(["task=eagle3", f"{old}=1"])
    assert len(problems) == 1 and problems[0].startswith(f"{old}: ") and f"Fix: {new}=" in problems[0], problems


def test_the_old_learning_rate_option_exits_2_before_any_run_dir(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "optmodel", "task=eagle3", "task.lr=1e-3",
                           f"run.output_dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "task.lr: " in proc.stderr and "Fix: task.training.lr=1e-3" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_training_settings_a_draft_does_not_read_are_refused():
    problems = config_problems(compose_cfg("task=eagle3", "task.training.packing=pack", "task.training.eval_every=10",
                                           "task.training.global_batch_size=12"))
    assert [p.split(":")[0] for p in problems] == ["task.training.global_batch_size", "task.training.eval_every",
                                                   "task.training.packing"], problems


def test_conversation_file_without_messages_refused(tmp_path):
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"text": "no conversation here"}\n')
    with pytest.raises(ConfigError, match="task.conversations: .* has no messages"):
        validate(compose_cfg("task=eagle3", f"task.conversations={bad}"))


def test_features_of_another_target_refused(features_dir, tmp_path):
    meta = json.loads((features_dir / "features.json").read_text())
    (tmp_path / "features.json").write_text(json.dumps({**meta, "hidden_size": 256, "num_layers": 8}))
    problems = config_problems(compose_cfg("task=eagle3", f"task.offline_data={tmp_path}"))
    assert len(problems) == 2 and all(p.startswith("task.offline_data:") for p in problems)
    assert "hidden_size 256" in problems[0] and "num_layers 8" in problems[1]


def test_sigterm_mid_training_checkpoints_and_resume_ends_with_the_uninterrupted_draft(tmp_path):
    """The training stack's preemption, as finetune's: a SIGTERM during step 3 saves a complete
    checkpoint at its end and stops; run.resume continues from it (steps 1-3 not trained again)
    and ends with the draft of a run that was never interrupted."""
    import dataclasses
    import os
    import signal

    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optmodel.tasks.eagle3.spec import Eagle3TaskConfig, eagle3_training
    from optmodel.speculative import workflow
    from optmodel.speculative.checkpoint import draft_state
    from optmodel.training.callbacks import Preempted
    from optmodel.training.checkpoints import last_complete_checkpoint

    training = dataclasses.replace(eagle3_training(), max_steps=6, save_every=100, log_every=1, micro_batch_size=4,
                                   global_batch_size=4)
    task = OmegaConf.structured(Eagle3TaskConfig(al_every=0, seq_len=32, num_conversations=16, training=training))
    tok = AutoTokenizer.from_pretrained(TINY_QWEN3)

    def model():
        return AutoModelForCausalLM.from_pretrained(TINY_QWEN3, dtype=torch.float32)

    whole = model()
    workflow.online(whole, tok, task, tmp_path / "whole", 0)

    losses = []

    def term_during_step_3(row):
        if "train/loss" in row:
            losses.append(row["train/loss"])
            if len(losses) == 2:  # logged at the end of step 2: the signal arrives during step 3
                os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(Preempted, match="after step 3"):
            workflow.online(model(), tok, task, tmp_path / "cut", 0, log_fn=term_during_step_3)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert last_complete_checkpoint(tmp_path / "cut" / "checkpoints").name == "checkpoint-3"
    resumed, logged = model(), []
    metrics = workflow.online(resumed, tok, task, tmp_path / "cut", 0, resume=True,
                              log_fn=lambda row: logged.append(row) if "train/loss" in row else None)
    assert (metrics["train_resumed_from_step"], metrics["train_steps"], len(logged)) == (3, 6, 3)
    ours, theirs = draft_state(resumed), draft_state(whole)
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[k].float(), theirs[k].float(), atol=1e-6) for k in ours)
