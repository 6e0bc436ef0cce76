"""Conversation data for EAGLE3: jsonl rows of `messages` -> fixed-length token rows.

ModelOpt's HF EAGLE caches its train-time-test attention masks per sequence length, so
every row is padded / truncated to the same `seq_len`."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterator, List, Optional

from optmodel.data.text import jsonl_rows

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "speculative"
BUNDLED_CONVERSATIONS = ASSETS / "conversations.jsonl"
BUNDLED_PROMPTS = ASSETS / "mt_bench_prompts.jsonl"


def resolve(path: Optional[str], bundled: Path) -> Path:
    return bundled if path in (None, "", "bundled") else Path(path).expanduser()


def conversations(path: Path, limit: Optional[int] = None, field: str = "task.conversations") -> List[List[Dict[str, str]]]:
    """Each row's `messages` (or ShareGPT `conversations` with from/value)."""
    out = []
    for _, row in jsonl_rows(path, field):
        msgs = row.get("messages") or [
            {"role": {"human": "user", "gpt": "assistant"}.get(m["from"], m["from"]), "content": m["value"]}
            for m in row.get("conversations", [])
        ]
        if msgs:
            out.append(msgs)
        if limit and len(out) >= limit:
            break
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
            out.append(next(m["content"] for m in row["messages"] if m["role"] == "user"))
        if limit and len(out) >= limit:
            break
    return out


def prompt_ids(tokenizer, prompt: str):
    """[1, s] token ids of a first turn through the chat template, ready for the answer."""
    enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    return enc["input_ids"]


def token_rows(tokenizer, convs: List[List[Dict[str, str]]], seq_len: int) -> Iterator[Dict[str, "torch.Tensor"]]:  # noqa: F821
    """input_ids / attention_mask / loss_mask of `seq_len` tokens per conversation."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for msgs in convs:
        enc = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True)
        ids = list(enc["input_ids"])[:seq_len]
        n = len(ids)
        ids = ids + [pad] * (seq_len - n)
        mask = [1] * n + [0] * (seq_len - n)
        yield {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
               "loss_mask": torch.tensor(mask)}


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
