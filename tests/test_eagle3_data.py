"""EAGLE3 training data and checkpoints on the tiny target with real ModelOpt / transformers:
the loss covers the assistant turns only (a user turn's targets do not move it), OpenAI
content parts load, dropped rows and truncation are counted, a checkpoint holds the draft
and its optimizer state (not the frozen target) and refuses a resume against another target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY_QWEN3 = Path(__file__).resolve().parent.parent / "optmodel" / "assets" / "tiny_models" / "tiny_qwen3"
CHAT = [{"role": "user", "content": "Tell me about birds and the sky today."},
        {"role": "assistant", "content": "A bird has two legs. The sky is blue."},
        {"role": "user", "content": "And dogs?"},
        {"role": "assistant", "content": "There are six yellow dogs."}]


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_QWEN3)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_loss_mask_marks_the_tokens_before_assistant_tokens(tok):
    from optmodel.speculative.data import token_rows

    row = next(token_rows(tok, [CHAT], 64))
    ids, loss = row["input_ids"].tolist(), row["loss_mask"].tolist()
    learned = tok.decode([ids[j + 1] for j in range(len(ids) - 1) if loss[j]])
    # the target's output at j predicts token j + 1: exactly the assistant turns (and their end) are learned
    assert learned.replace(tok.eos_token, "|") == "A bird has two legs. The sky is blue.|There are six yellow dogs.|"


def test_user_turn_contributes_no_loss(tok, one_thread):
    """ModelOpt's offline EAGLE forward: moving the target's outputs at the positions that
    predict user tokens leaves the draft's loss unchanged; moving one that predicts an
    assistant token changes it (and with an all-ones mask the user turn would count)."""
    import torch

    from optmodel.speculative.convert import DraftSpec, convert, load_offline_base
    from optmodel.speculative.data import collate, token_rows

    torch.manual_seed(0)
    model = load_offline_base(str(TINY_QWEN3)).float()
    model.model.dtype = model.config.dtype = torch.float32
    convert(model, DraftSpec(aux_layer_ids=[0, 1, 2]), offline=True, num_layers=4)
    model.train()
    batch = collate(list(token_rows(tok, [CHAT], 48)))
    s = batch["input_ids"].shape[1]
    aux, final = torch.randn(1, s, 384), torch.randn(1, s, 128)

    def loss(final_states, mask=None):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    loss_mask=batch["loss_mask"] if mask is None else mask,
                    base_model_outputs={"aux_hidden_states": aux, "base_model_hidden_states": final_states})
        return float(out.loss)

    user = (batch["loss_mask"][0] == 0) & (batch["attention_mask"][0] == 1)
    moved_user = final.clone()
    moved_user[0, user] += 5 * torch.randn(int(user.sum()), 128)
    moved_assistant = final.clone()
    moved_assistant[0, int(torch.nonzero(batch["loss_mask"][0])[3])] += 5 * torch.randn(128)
    base = loss(final)
    assert loss(moved_user) == pytest.approx(base, rel=1e-6)
    assert loss(moved_assistant) != pytest.approx(base, rel=1e-4)
    everything = batch["attention_mask"]
    assert loss(moved_user, everything) != pytest.approx(loss(final, everything), rel=1e-4)


def test_openai_content_parts_load_as_their_text(tok, tmp_path):
    from optmodel.speculative.data import conversations, token_rows

    parts = [{**m, "content": [{"type": "text", "text": m["content"][:9]}, {"type": "text", "text": m["content"][9:]}]}
             for m in CHAT]
    path = write_jsonl(tmp_path / "parts.jsonl", [{"messages": parts}, {"messages": CHAT}])
    convs = conversations(path)
    a, b = (r["input_ids"].tolist() for r in token_rows(tok, convs, 64))
    assert a == b


def test_dropped_rows_and_truncation_are_counted(tok, tmp_path):
    from optmodel.speculative.data import account_line, conversations, new_account, token_rows

    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, CHAT[1]]
    long_chat = CHAT * 6
    rows = [{"messages": CHAT}, {"text": "a pretraining row"}, {"prompt": "p", "completion": "c"}, {"messages": []},
            {"messages": image}, {"messages": CHAT[:1]}, {"messages": long_chat}]
    account = new_account()
    convs = conversations(write_jsonl(tmp_path / "mixed.jsonl", rows), account=account)
    out = list(token_rows(tok, convs, 64, account))
    full = len(tok.apply_chat_template(long_chat, tokenize=True, return_dict=True)["input_ids"])
    assert len(out) == 2
    short = len(tok.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"])
    assert account == {"rows_read": 7, "rows_used": 2, "truncated": 1, "tokens_cut": full - 64, "tokens": short + 64,
                       "dropped": {"unexpected_key": 2, "empty": 1, "non_text_content": 1, "no_assistant_turn": 1}}
    assert account_line(account).startswith("7 rows read, 2 used, 5 dropped (empty 1, no assistant turn 1, ")


def test_summary_prints_the_measured_al_rounded_or_none():
    from optmodel.tasks.eagle3.run import summary

    base = {"train_steps": 20, "train_tokens_per_second": 812.4}
    offline = summary("tiny_qwen3", {**base, "al_before": None, "al_after": None}, None)
    assert "AL" not in offline and "None" not in offline
    online = summary("tiny_qwen3", {**base, "al_before": 1.0, "al_after": 1.234567}, None)
    assert online.endswith("AL 1.000 -> 1.235")
    named = summary("tiny_qwen3", {**base, "train_tokens": 20480}, None, target="/ckpt/target", draft="/runs/e3/draft")
    assert "20 steps (20480 tokens seen)" in named
    assert "teacher     /ckpt/target (the target, frozen)" in named and "student     /runs/e3/draft" in named


def test_checkpoint_holds_the_draft_and_its_optimizer_not_the_target(tmp_path, one_thread):
    """20 steps with save_steps above max_steps: one checkpoint, the final one, no larger than
    1.5 x (draft + optimizer state); a resume against another target is refused."""
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import dataclasses

    from optmodel.tasks.eagle3.spec import Eagle3TaskConfig, eagle3_training
    from optmodel.speculative import workflow
    from optmodel.speculative.checkpoint import draft_state

    training = dataclasses.replace(eagle3_training(), max_steps=20, save_every=100, micro_batch_size=2,
                                   global_batch_size=2, lr=1e-3)
    task = OmegaConf.structured(Eagle3TaskConfig(al_every=0, seq_len=32, num_conversations=8, training=training))
    tok = AutoTokenizer.from_pretrained(TINY_QWEN3)
    model = AutoModelForCausalLM.from_pretrained(TINY_QWEN3, dtype=torch.float32)
    workflow.online(model, tok, task, tmp_path, 0)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-20"]
    ckpt = tmp_path / "checkpoints" / "checkpoint-20"
    draft = sum(v.numel() * v.element_size() for v in draft_state(model).values())
    total = sum(f.stat().st_size for f in ckpt.iterdir())
    assert total <= 1.5 * (draft + (ckpt / "optimizer.pt").stat().st_size)
    saved = load_file(str(ckpt / "model.safetensors"))
    assert saved and all(k.startswith("eagle_module.") for k in saved)
    assert all(torch.equal(v, draft_state(model)[k]) for k, v in saved.items())

    other = AutoModelForCausalLM.from_pretrained(TINY_QWEN3, dtype=torch.float32)
    with torch.no_grad():
        other.get_input_embeddings().weight.mul_(1.5)
    with pytest.raises(ValueError, match="this run's target .* differs"):
        workflow.online(other, tok, task, tmp_path, 0, resume=True)
