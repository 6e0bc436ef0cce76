"""Text data for calibration and perplexity: read, tokenize, pack into full sequences.

A record is plain text or a chat (`[{"role": ..., "content": ...}, ...]`, rendered with the
tokenizer's chat template). Sources: the bundled corpus, local `.txt` / `.jsonl` files, or a
Hugging Face dataset (local cache or a local dataset directory; the hub is never contacted
when offline).

Calibration batches are built one of three ways (`data.packing`):
- pack: concatenate records (each ending in EOS) and cut full `seq_len` windows — no padding;
- sort: one record per row, truncated to `seq_len`, sorted by length and padded only to the
  longest row of its batch;
- pad:  one record per row padded to `seq_len` (what most PTQ scripts do; kept as the
  baseline that benchmarks/calibration.py measures against).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig

from optmodel.facts.paths import CORPUS_DIR
from optmodel.facts.records import DataError, Record, read_records, record_of

PACKING_MODES = ("pack", "sort", "pad")


def hf_records(data: DictConfig, split: str) -> List[Record]:
    """Records of a Hugging Face dataset: a local dataset directory, or a hub name already in
    the local cache (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE make `datasets` use only the cache)."""
    import datasets

    split_name = data.calib_split if split == "calib" else data.eval_split
    try:
        ds = datasets.load_dataset(data.dataset, data.dataset_config, split=split_name)
    except Exception as err:  # datasets raises several types for "not cached" / "no such split"
        raise DataError(
            f"data.dataset: cannot load {data.dataset!r} (config {data.dataset_config!r}, split {split_name!r}) "
            f"from a local directory or the local Hugging Face cache: {type(err).__name__}: {str(err)[:300]}. "
            f"Fix: on a machine with network run `python -c \"import datasets; datasets.load_dataset("
            f"'{data.dataset}', {data.dataset_config!r}, split='{split_name}')\"` and copy ~/.cache/huggingface "
            f"(or set HF_HOME), or export it to JSON lines and use data.source=jsonl."
        ) from None
    limit = data.num_samples * 4 if split == "calib" else None  # long enough to pack num_samples windows
    records = []
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        records.append(record_of(row, f"data.dataset {data.dataset!r} row {i}", data.text_field))
    if not records:
        raise DataError(f"data.dataset: {data.dataset!r} split {split_name!r} is empty.")
    return records


def dataset_texts(data: DictConfig, split: str) -> List[Record]:
    """Records of `data` for split 'calib' or 'eval'."""
    if data.source == "bundled":
        return read_records(CORPUS_DIR / ("train.txt" if split == "calib" else "heldout.txt"), f"data.{split}_path")
    if data.source == "hf":
        return hf_records(data, split)
    return read_records(Path(data[f"{split}_path"]), f"data.{split}_path")


def render(tokenizer, record: Record) -> str:
    if isinstance(record, str):
        return record
    return tokenizer.apply_chat_template(record, tokenize=False)


def token_ids(tokenizer, record: Record) -> List[int]:
    return tokenizer(render(tokenizer, record), add_special_tokens=False)["input_ids"]


def pack(tokenizer, texts: List[Record], seq_len: int, max_sequences: int, field: str) -> "torch.Tensor":  # noqa: F821
    """[n, seq_len] token ids of consecutive full windows; n <= max_sequences (0 = all)."""
    import torch

    eos = tokenizer.eos_token_id
    ids: List[int] = []
    needed = max_sequences * seq_len if max_sequences else None
    for text in texts:
        ids.extend(token_ids(tokenizer, text))
        if eos is not None:
            ids.append(eos)
        if needed is not None and len(ids) >= needed:
            break
    n = len(ids) // seq_len
    if max_sequences:
        n = min(n, max_sequences)
    if n == 0:
        raise DataError(
            f"{field}: the data holds {len(ids)} tokens, fewer than one sequence of data.seq_len={seq_len}. "
            f"Fix: more text, or a smaller data.seq_len."
        )
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


@dataclass
class CalibrationData:
    """Batches ready for the model (`input_ids`, and `attention_mask` when rows are padded)."""

    batches: List[Dict[str, "torch.Tensor"]]  # noqa: F821
    sequences: int
    tokens: int  # real tokens the model processes
    pad_tokens: int  # padding positions it also processes

    @property
    def useful_ratio(self) -> float:
        return self.tokens / max(1, self.tokens + self.pad_tokens)

    def stats(self) -> Dict[str, Any]:
        return {
            "calib_sequences": self.sequences,
            "calib_tokens": self.tokens,
            "calib_pad_tokens": self.pad_tokens,
            "calib_useful_token_ratio": round(self.useful_ratio, 4),
        }


def _padded_batches(rows: List[List[int]], batch_size: int, pad_id: int, pad_to: Optional[int]):
    import torch

    batches, pads = [], 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = pad_to or max(len(r) for r in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, row in enumerate(chunk):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        pads += int((mask == 0).sum())
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches, pads


def calibration_data(tokenizer, records: List[Record], data: DictConfig, packing: Optional[str] = None) -> CalibrationData:
    """Up to data.num_samples calibration rows of at most data.seq_len tokens, batched."""
    packing = packing or data.packing
    if packing == "pack":
        windows = pack(tokenizer, records, data.seq_len, data.num_samples, "data.calib_path")
        batches = [{"input_ids": windows[s : s + data.batch_size]} for s in range(0, len(windows), data.batch_size)]
        return CalibrationData(batches, len(windows), windows.numel(), 0)
    eos = tokenizer.eos_token_id
    rows = []
    for record in records[: data.num_samples]:
        ids = (token_ids(tokenizer, record) + ([eos] if eos is not None else []))[: data.seq_len]
        if ids:
            rows.append(ids)
    if not rows:
        raise DataError("data.calib_path: no calibration record produced a token.")
    if packing == "sort":
        rows.sort(key=len, reverse=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
    batches, pads = _padded_batches(rows, data.batch_size, pad_id, data.seq_len if packing == "pad" else None)
    return CalibrationData(batches, len(rows), sum(len(r) for r in rows), pads)
