"""Conversation data for EAGLE3: jsonl rows of `messages` -> fixed-length token rows.

ModelOpt's HF EAGLE caches its train-time-test attention masks per sequence length, so
every row is padded / truncated to the same `seq_len`. The loss covers the assistant turns
only (the chat template's assistant spans): the draft learns what the target generates, not
the users' text. Rows read, used, dropped (by reason) and truncated are counted."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from optmodel.facts.records import jsonl_rows

log = logging.getLogger("optmodel")

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "speculative"
BUNDLED_CONVERSATIONS = ASSETS / "conversations.jsonl"
BUNDLED_PROMPTS = ASSETS / "mt_bench_prompts.jsonl"


def resolve(path: Optional[str], bundled: Path) -> Path:
    return bundled if path in (None, "", "bundled") else Path(path).expanduser()


GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")
KNOWN_KEYS = {"messages", "conversations", "id", "conversation_id", "uuid", "source", "metadata", "tools", "system"}
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


def new_account() -> Dict[str, object]:
    """What became of the data set's rows (the summary and the manifest's `data` print it)."""
    return {"rows_read": 0, "rows_used": 0, "dropped": {}, "truncated": 0, "tokens_cut": 0, "tokens": 0}


def drop(account: Optional[dict], reason: str) -> None:
    if account is not None:
        account["dropped"][reason] = account["dropped"].get(reason, 0) + 1


def text_of(content) -> Optional[str]:
    """A message's text: a string, or OpenAI content parts ([{"type": "text", "text": ...}]);
    None when it holds anything but text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    return None


def messages_of(row: dict) -> Tuple[Optional[List[Dict[str, str]]], Optional[str]]:
    """(messages, None) or (None, why the row is dropped)."""
    if not isinstance(row, dict):
        return None, "not_an_object"
    if set(row) - KNOWN_KEYS and not (row.get("messages") or row.get("conversations")):
        return None, "unexpected_key"
    if row.get("messages"):
        raw = [(m.get("role"), m.get("content")) for m in row["messages"]]
    else:  # ShareGPT: from / value
        raw = [(SHAREGPT_ROLES.get(m.get("from"), m.get("from")), m.get("value")) for m in row.get("conversations") or []]
    if not raw:
        return None, "empty"
    msgs = []
    for role, content in raw:
        text = text_of(content)
        if text is None:
            return None, "non_text_content"
        msgs.append({"role": role, "content": text})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
        return None, "no_assistant_turn"
    return msgs, None


def conversations(path: Path, limit: Optional[int] = None, field: str = "task.conversations",
                  account: Optional[dict] = None) -> List[List[Dict[str, str]]]:
    """Each row's `messages` (or ShareGPT `conversations` with from/value); rows that hold no
    conversation are dropped and counted by reason in `account`."""
    out = []
    for lineno, row in jsonl_rows(path, field):
        if limit and len(out) >= limit:
            break
        if account is not None:
            account["rows_read"] += 1
        msgs, why = messages_of(row)
        if why:
            log.debug("%s: %s line %d dropped (%s)", field, path, lineno, why)
            drop(account, why)
            continue
        out.append(msgs)
    return out


def first_turns(path: Path, limit: Optional[int] = None, field: str = "task.prompts") -> List[str]:
    """MT-Bench style prompts: each row's first of `turns` (or `prompt` / first user message)."""
    out = []
    for _, row in jsonl_rows(path, field):
        if row.get("turns"):
            out.append(row["turns"][0])
        elif row.get("prompt"):
            out.append(row["prompt"])
        else:
            out.append(text_of(next(m["content"] for m in row["messages"] if m["role"] == "user")))
        if limit and len(out) >= limit:
            break
    return out


def prompt_ids(tokenizer, prompt: str):
    """[1, s] token ids of a first turn through the chat template, ready for the answer."""
    enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    return enc["input_ids"]


def assistant_mask(tokenizer, msgs: List[Dict[str, str]]) -> Tuple[List[int], List[int]]:
    """(token ids, 1 on assistant-turn tokens) of a conversation through the chat template.

    A template with `{% generation %}` spans: transformers' own assistant mask. Otherwise the
    span of assistant turn i runs from the end of the conversation up to it rendered with the
    generation prompt to the end of the conversation through it (its end-of-turn tokens too)."""
    if GENERATION_TAG.search(getattr(tokenizer, "chat_template", None) or ""):
        enc = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        return list(enc["input_ids"]), list(enc["assistant_masks"])
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    spans, cursor = [], 0
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        head = tokenizer.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True) if i else ""
        turn = tokenizer.apply_chat_template(msgs[:i + 1], tokenize=False)
        start = len(head) if text.startswith(head) else text.find(m["content"], cursor)
        end = len(turn) if text.startswith(turn) else start + len(m["content"])
        if start >= 0:
            spans.append((start, end))
            cursor = end
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a < e and b > s for s, e in spans)) for a, b in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def token_rows(tokenizer, convs: List[List[Dict[str, str]]], seq_len: int,
               account: Optional[dict] = None) -> Iterator[Dict[str, "torch.Tensor"]]:  # noqa: F821
    """input_ids / attention_mask / loss_mask of `seq_len` tokens per conversation.

    loss_mask[j] gates ModelOpt's EAGLE loss on the target's output at position j, which
    predicts token j + 1: it is 1 where token j + 1 is an assistant token. A conversation
    longer than `seq_len` is cut (counted, with the tokens cut); one left without assistant
    tokens is dropped."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for msgs in convs:
        ids, assistant = assistant_mask(tokenizer, msgs)
        if len(ids) > seq_len and account is not None:
            account["truncated"] += 1
            account["tokens_cut"] += len(ids) - seq_len
        ids, assistant = ids[:seq_len], assistant[:seq_len]
        loss = assistant[1:] + [0]
        if not any(loss):
            drop(account, "no_assistant_tokens_within_seq_len")
            continue
        n = len(ids)
        if account is not None:
            account["rows_used"] += 1
            account["tokens"] += n  # real tokens of the rows used (padding is not counted)
        yield {"input_ids": torch.tensor(ids + [pad] * (seq_len - n)),
               "attention_mask": torch.tensor([1] * n + [0] * (seq_len - n)),
               "loss_mask": torch.tensor(loss + [0] * (seq_len - n))}


def account_line(account: dict) -> str:
    """One line for the run's summary."""
    dropped = sum(account["dropped"].values())
    why = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(account["dropped"].items()))
    return (f"{account['rows_read']} rows read, {account['rows_used']} used, {dropped} dropped"
            f"{f' ({why})' if why else ''}, {account['truncated']} truncated ({account['tokens_cut']} tokens cut)")


def real_tokens_per_row(rows) -> float:
    """Mean non-padding tokens of the rows (a list, or a dataset holding `.rows`): what one row
    of training shows the draft, for "tokens seen" (padding is no token seen)."""
    rows = getattr(rows, "rows", rows)
    return sum(int(r["attention_mask"].sum()) for r in rows) / max(1, len(rows))


class RowsDataset:
    """A map-style dataset over precomputed rows (what the Trainer's dataloader reads)."""

    def __init__(self, rows: List[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def collate(rows: List[dict]) -> dict:
    """Stack tensors, nested dicts too (offline rows carry `base_model_outputs`)."""
    import torch

    out = {}
    for key, value in rows[0].items():
        if isinstance(value, dict):
            out[key] = collate([r[key] for r in rows])
        else:
            out[key] = torch.stack([r[key] for r in rows])
    return out
