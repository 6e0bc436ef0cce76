"""Local text data files (.txt paragraphs, .jsonl rows of text or chat messages) read as
records, and the problems of the files a data config names: plain file reads, no tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple, Union

from omegaconf import DictConfig

Record = Union[str, List[Dict[str, str]]]


class DataError(ValueError):
    pass


def record_of(row: Any, where: str, text_field: str = "text") -> Record:
    """The text or chat messages of one JSON row; DataError naming the row otherwise."""
    if isinstance(row, dict):
        if isinstance(row.get(text_field), str):
            return row[text_field]
        messages = row.get("messages")
        if isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        ):
            return messages
    raise DataError(
        f"{where} has neither a string field {text_field!r} nor a 'messages' list of "
        f"{{'role': ..., 'content': ...}} turns."
    )


def jsonl_rows(path: Path, field: str) -> Iterator[Tuple[int, Any]]:
    """(line number, parsed row) of every non-blank line; DataError naming `field` and the
    line when one is not JSON."""
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{field}: {path} line {lineno} is not JSON ({err}).") from None


def read_records(path: Path, field: str) -> List[Record]:
    """Records of a .txt (paragraphs split on blank lines) or .jsonl (text or messages) file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{field}: {path} does not exist. Fix: {field}=/path/to/file.jsonl (or .txt).")
    if path.suffix == ".jsonl":
        records: List[Record] = [record_of(row, f"{field}: {path} line {lineno}") for lineno, row in jsonl_rows(path, field)]
    else:
        records = [p.strip() for p in path.read_text().split("\n\n")]
    records = [r for r in records if not isinstance(r, str) or r.strip()]
    if not records:
        raise DataError(f"{field}: {path} holds no text (empty dataset). Fix: point {field} at a file with records.")
    return records


def source_problems(data: DictConfig) -> List[str]:
    """Problems of local data files, found by reading them (cheap; no tokenizer, no torch)."""
    if data.source not in ("text", "jsonl"):
        return []
    problems = []
    for split in ("calib", "eval"):
        path = data[f"{split}_path"]
        if not path:
            problems.append(f"data.{split}_path: data.source={data.source} needs a file. Fix: data.{split}_path=/path/to/file.jsonl")
            continue
        try:
            read_records(Path(path), f"data.{split}_path")
        except DataError as err:
            problems.append(str(err))
    return problems
