"""Text data for calibration and perplexity: read, tokenize, pack into full sequences.

Packing concatenates documents (each ending in EOS) and cuts full `seq_len` windows, so no
compute is spent on padding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

from omegaconf import DictConfig

from optmodel.paths import CORPUS_DIR


class DataError(ValueError):
    pass


def read_texts(path: Path, field: str) -> List[str]:
    """Documents of a .txt (paragraphs split on blank lines) or .jsonl ({"text": ...}) file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        texts = []
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{field}: {path} line {lineno} is not JSON ({err}).") from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise DataError(f"{field}: {path} line {lineno} has no string field 'text'.")
                texts.append(row["text"])
    else:
        texts = [p.strip() for p in path.read_text().split("\n\n")]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError(f"{field}: {path} holds no text.")
    return texts


def dataset_texts(data: DictConfig, split: str) -> List[str]:
    """split: 'calib' or 'eval'."""
    if data.source == "bundled":
        path = CORPUS_DIR / ("train.txt" if split == "calib" else "heldout.txt")
    else:
        path = Path(data[f"{split}_path"])
    return read_texts(path, f"data.{split}_path")


def pack(tokenizer, texts: List[str], seq_len: int, max_sequences: int, field: str) -> "torch.Tensor":  # noqa: F821
    """[n, seq_len] token ids of consecutive full windows; n <= max_sequences (0 = all)."""
    import torch

    eos = tokenizer.eos_token_id
    ids: List[int] = []
    needed = max_sequences * seq_len if max_sequences else None
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
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
