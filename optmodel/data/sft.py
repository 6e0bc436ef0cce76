"""Supervised fine-tuning / distillation data: token ids plus labels, packed or padded.

A record is plain text (every token is a target) or a chat (`[{"role", "content"}, ...]`,
rendered with the tokenizer's chat template; only assistant tokens are targets — the template
marks them with `{% generation %}`, which `apply_chat_template(return_assistant_tokens_mask=True)`
turns into a mask). Labels of non-target positions are -100, the ignore index of transformers'
causal-LM loss and of ModelOpt's KD losses.

Rows are built one of two ways (`packing`):
- pack: records (each ending in EOS) concatenated and cut into full `seq_len` windows;
- pad:  one record per row, truncated to `seq_len` and padded (attention mask 0 on padding).
A chat whose assistant tokens reach past `seq_len` inside its own record is counted as cut
(`truncated_chats`): with pad its answer is lost, with pack it is split across windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from optmodel.data.text import dataset_texts
from optmodel.facts.records import DataError, Record

IGNORE_INDEX = -100
SFT_PACKING_MODES = ("pack", "pad")


def chat_template_marks_assistant(tokenizer) -> bool:
    """True when the tokenizer's chat template has `{% generation %}` markers."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "{% generation %}" in template or "{%- generation %}" in template


def tokenize_record(tokenizer, record: Record) -> Tuple[List[int], List[int]]:
    """(token ids, labels) of one record, ending in EOS for text; labels -100 off-target."""
    if isinstance(record, str):
        ids = tokenizer(record, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        return ids, list(ids)
    if not chat_template_marks_assistant(tokenizer):
        raise DataError(
            "chat records need a chat template with {% generation %} ... {% endgeneration %} around assistant "
            "turns, so the loss covers only assistant tokens; this tokenizer's template has none. Fix: add the "
            "markers to the template (tokenizer_config.json / chat_template.jinja), or give 'text' records."
        )
    out = tokenizer.apply_chat_template(record, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids = list(out["input_ids"])
    mask = list(out["assistant_masks"])
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
    return ids, labels


@dataclass
class SFTStats:
    records: int = 0
    chat_records: int = 0
    sequences: int = 0
    tokens: int = 0  # real tokens in the rows
    target_tokens: int = 0  # tokens the loss is computed on
    truncated_chats: int = 0  # chats whose assistant tokens reach past seq_len
    dropped_tokens: int = 0  # pack: the tail that fills no full window; pad: tokens cut off

    def as_metrics(self, prefix: str) -> Dict[str, int]:
        return {f"{prefix}_{k}": v for k, v in self.__dict__.items()}


@dataclass
class SFTDataset:
    """A map-style dataset of {"input_ids", "labels", "attention_mask"} rows ([seq_len] long tensors),
    usable as a transformers Trainer's train / eval dataset with the default collator."""

    input_ids: "torch.Tensor"  # noqa: F821  [n, seq_len]
    labels: "torch.Tensor"  # noqa: F821
    attention_mask: "torch.Tensor"  # noqa: F821
    stats: SFTStats = field(default_factory=SFTStats)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i], "attention_mask": self.attention_mask[i]}


def _cut_by_seq_len(labels: Sequence[int], seq_len: int) -> bool:
    return any(label != IGNORE_INDEX for label in labels[seq_len:])


def build_sft_dataset(tokenizer, records: List[Record], seq_len: int, packing: str = "pack",
                      max_sequences: int = 0, field_name: str = "data") -> SFTDataset:
    """Rows of at most `max_sequences` (0: all) sequences of `seq_len` tokens from `records`."""
    import torch

    if packing not in SFT_PACKING_MODES:
        raise DataError(f"packing {packing!r} is not one of {', '.join(SFT_PACKING_MODES)} for training data.")
    stats = SFTStats()
    rows_ids: List[List[int]] = []
    rows_labels: List[List[int]] = []
    flat_ids: List[int] = []
    flat_labels: List[int] = []
    for record in records:
        if max_sequences and (len(rows_ids) >= max_sequences or len(flat_ids) >= max_sequences * seq_len):
            break
        ids, labels = tokenize_record(tokenizer, record)
        stats.records += 1
        if not isinstance(record, str):
            stats.chat_records += 1
            stats.truncated_chats += int(_cut_by_seq_len(labels, seq_len))
        if packing == "pack":
            flat_ids.extend(ids)
            flat_labels.extend(labels)
        elif ids:
            stats.dropped_tokens += max(0, len(ids) - seq_len)
            rows_ids.append(ids[:seq_len])
            rows_labels.append(labels[:seq_len])
    if packing == "pack":
        n = len(flat_ids) // seq_len
        if max_sequences:
            n = min(n, max_sequences)
        stats.dropped_tokens = len(flat_ids) - n * seq_len
        rows_ids = [flat_ids[i * seq_len:(i + 1) * seq_len] for i in range(n)]
        rows_labels = [flat_labels[i * seq_len:(i + 1) * seq_len] for i in range(n)]
    if not rows_ids:
        raise DataError(
            f"{field_name}: the records make no training sequence of seq_len={seq_len} tokens "
            f"({len(flat_ids)} tokens in all). Fix: more data, or a smaller data.seq_len."
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    n = len(rows_ids)
    input_ids = torch.full((n, seq_len), pad_id, dtype=torch.long)
    labels_t = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((n, seq_len), dtype=torch.long)
    for i, (ids, labels) in enumerate(zip(rows_ids, rows_labels)):
        input_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels_t[i, :len(labels)] = torch.tensor(labels, dtype=torch.long)
        attention[i, :len(ids)] = 1
    stats.sequences = n
    stats.tokens = int(attention.sum())
    # The model predicts token t+1 at position t, so the first label of a row is never a target.
    stats.target_tokens = int((labels_t[:, 1:] != IGNORE_INDEX).sum())
    if stats.target_tokens == 0:
        raise DataError(f"{field_name}: no token is a training target (chats without assistant turns?).")
    return SFTDataset(input_ids, labels_t, attention, stats)


def sft_splits(tokenizer, data, seq_len: Optional[int] = None, packing: str = "pack",
               max_train_sequences: int = 0) -> Tuple[SFTDataset, SFTDataset]:
    """(train, held-out) datasets of the `data=` config: its calibration/train split and its
    eval split (data.eval_max_sequences caps the held-out rows)."""
    seq_len = seq_len or data.seq_len
    train = build_sft_dataset(tokenizer, dataset_texts(data, "calib"), seq_len, packing, max_train_sequences,
                              "data.calib_path")
    heldout = build_sft_dataset(tokenizer, dataset_texts(data, "eval"), seq_len, packing,
                                data.eval_max_sequences, "data.eval_path")
    return train, heldout
