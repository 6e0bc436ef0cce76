"""Checks of a checkpoint's files that read headers only (milliseconds per file): the
safetensors shards parse and hold what their index and config.json say, and the tokenizer
exists and covers the ids the model expects. A corrupt or incomplete download fails at
validation, naming the file, instead of minutes later inside a library."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Dict, List, Mapping, Optional

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model", "vocab.txt", "spiece.model")
_MAX_HEADER = 100 * 1024 * 1024


def safetensors_header(path: Path) -> Dict[str, dict]:
    """The tensor table of one .safetensors file; ValueError saying what is wrong with it."""
    size = path.stat().st_size
    if size < 8:
        raise ValueError(f"{path} is {size} bytes, too short for a safetensors file (truncated or empty)")
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > min(size - 8, _MAX_HEADER):
            raise ValueError(f"{path} has a header length of {length} bytes in a {size}-byte file (corrupt or truncated)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} has an unreadable header ({err}); the file is corrupt") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} has an unreadable header; the file is corrupt")
    header.pop("__metadata__", None)
    end = max((t["data_offsets"][1] for t in header.values() if isinstance(t, dict) and "data_offsets" in t), default=0)
    if 8 + length + end > size:
        raise ValueError(f"{path} is truncated: its header describes {8 + length + end} bytes, the file has {size}")
    return header


def _text_config(hf: Mapping) -> Mapping:
    return hf.get("text_config") if isinstance(hf.get("text_config"), Mapping) else hf


def weight_problems(ckpt: Path, hf: Mapping, field: str) -> List[str]:
    """Every shard parses; an index names only tensors its shards hold; the embedding has
    the shape config.json implies."""
    shards = sorted(ckpt.glob("*.safetensors"))
    problems, tensors = [], {}
    for shard in shards:
        try:
            tensors.update({name: (shard.name, meta) for name, meta in safetensors_header(shard).items()})
        except ValueError as err:
            problems.append(f"{field}: {err}. Fix: download the checkpoint again (or re-run the run that wrote it).")
    index = ckpt / "model.safetensors.index.json"
    if index.is_file() and not problems:
        try:
            weight_map = json.loads(index.read_text()).get("weight_map") or {}
        except (OSError, ValueError) as err:
            return problems + [f"{field}: {index} is not valid JSON ({err}). Fix: download the checkpoint again."]
        missing_files = sorted({f for f in weight_map.values() if not (ckpt / f).is_file()})
        if missing_files:
            problems.append(f"{field}: {index.name} names shards that are not in {ckpt}: {', '.join(missing_files[:5])}. "
                            f"Fix: download the missing shards.")
        absent = [n for n, f in weight_map.items() if (ckpt / f).is_file() and tensors.get(n, (None,))[0] != f]
        if absent:
            problems.append(f"{field}: {index.name} names {len(absent)} tensors their shards do not hold "
                            f"(e.g. {absent[0]}). Fix: download the checkpoint again.")
    text = _text_config(hf)
    vocab, hidden = text.get("vocab_size"), text.get("hidden_size")
    embed = next((meta for name, (_, meta) in tensors.items() if name.endswith("embed_tokens.weight")), None)
    if embed is not None and vocab and hidden and list(embed.get("shape", [])) != [vocab, hidden]:
        problems.append(f"{field}: the embedding in {ckpt} has shape {embed.get('shape')} but config.json implies "
                        f"[{vocab}, {hidden}] (vocab_size, hidden_size): weights and config are from different models.")
    return problems


def _tokenizer_size(tok: Mapping) -> Optional[int]:
    vocab = (tok.get("model") or {}).get("vocab")
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab))) if isinstance(vocab, list) else []
    ids += [t.get("id") for t in tok.get("added_tokens") or [] if isinstance(t.get("id"), int)]
    return max(ids) + 1 if ids else None


def tokenizer_problems(ckpt: Path, hf: Mapping, field: str) -> List[str]:
    """The tokenizer files exist, parse, and cover config.json's special token ids without
    producing ids past the embedding."""
    present = [name for name in TOKENIZER_FILES if (ckpt / name).is_file()]
    if not present:
        return [f"{field}: {ckpt} has no tokenizer ({' / '.join(TOKENIZER_FILES)}); transformers would build an empty "
                f"one and every result would be meaningless. Fix: copy the tokenizer files of the model into {ckpt}."]
    if "tokenizer.json" not in present:
        return []  # sentencepiece / tiktoken files: checked when the tokenizer loads
    try:
        size = _tokenizer_size(json.loads((ckpt / "tokenizer.json").read_text()))
    except (OSError, ValueError) as err:
        return [f"{field}: {ckpt / 'tokenizer.json'} is not valid JSON ({err}). Fix: copy a good tokenizer.json."]
    if not size:
        return [f"{field}: {ckpt / 'tokenizer.json'} holds an empty vocabulary. Fix: copy the model's tokenizer files."]
    text = _text_config(hf)
    problems = []
    vocab = text.get("vocab_size")
    if vocab and size > vocab:
        problems.append(f"{field}: the tokenizer in {ckpt} produces ids up to {size - 1}, past the model's "
                        f"vocab_size {vocab}: tokenizer and weights are from different models.")
    for key in ("bos_token_id", "eos_token_id"):
        ids = text.get(key, hf.get(key))
        for token_id in ids if isinstance(ids, list) else [ids]:
            if isinstance(token_id, int) and token_id >= size:
                problems.append(f"{field}: config.json's {key} {token_id} is not in the tokenizer of {ckpt} "
                                f"({size} tokens): tokenizer and model are from different models.")
    return problems
