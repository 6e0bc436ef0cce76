"""Offline EAGLE3 features: the target's hidden states for a data set, on disk.

Per row: input_ids, attention_mask, loss_mask, the aux layers' outputs concatenated
(`aux_hidden_states`, what ModelOpt's forward hooks collect online) and the final
normalized hidden state (`base_model_hidden_states`). Rows go in shards of `shard_size`;
each shard is written atomically and then listed in `features.json`, so a killed dump
resumes by keeping every listed shard and redoing the one that was in progress."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tqdm import tqdm

from optmodel.manifest import atomic_write_text
from optmodel.speculative.data import collate

log = logging.getLogger("optmodel")
MANIFEST = "features.json"


def read_manifest(features_dir: Path) -> Optional[dict]:
    path = Path(features_dir) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def rows_digest(rows: List[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(r["input_ids"].numpy().tobytes())
    return h.hexdigest()[:16]


def target_hidden_states(model, aux_ids: List[int], batch: Dict[str, "torch.Tensor"]):  # noqa: F821
    """(final normalized hidden, aux layers' outputs concatenated) for one batch."""
    import torch

    captured: Dict[int, torch.Tensor] = {}
    layers = model.model.layers
    hooks = [layers[i].register_forward_hook(
        lambda m, inp, out, i=i: captured.__setitem__(i, out if isinstance(out, torch.Tensor) else out[0]))
        for i in aux_ids]
    try:
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    return out.hidden_states[-1], torch.cat([captured[i] for i in aux_ids], dim=-1)


def dump(model, rows: List[dict], out_dir: Path, aux_ids: List[int], shard_size: int, target: str,
         batch_size: int = 8, data: Optional[dict] = None, hidden_states=None,
         shape: Optional[Dict[str, int]] = None, write: bool = True) -> Tuple[dict, List[str]]:
    """Write (or finish) the feature shards of `rows` under `out_dir`; returns the manifest
    and the shard files written by this call (the others were kept from an earlier one).
    `hidden_states(batch) -> (final, aux)` and `shape` (hidden_size, num_layers, vocab_size)
    stand for another backend's model; default: a transformers model's forward and config.
    `write=False`: compute only (the other ranks of a model sharded over several processes)."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = rows_digest(rows)
    text = getattr(model.config, "text_config", None) or model.config
    shape = shape or {"hidden_size": text.hidden_size, "num_layers": text.num_hidden_layers,
                      "vocab_size": text.vocab_size}
    hidden_states = hidden_states or (lambda batch: target_hidden_states(model, aux_ids, batch))
    manifest = read_manifest(out_dir) or {}
    identity = {"target": str(target), "data_digest": digest, "num_rows": len(rows),
                "seq_len": int(rows[0]["input_ids"].shape[0]), "shard_size": shard_size,
                "aux_layer_ids": list(aux_ids), "hidden_size": shape["hidden_size"],
                "num_layers": shape["num_layers"], "vocab_size": shape["vocab_size"],
                "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}
    if manifest and {k: manifest.get(k) for k in identity} != identity:
        raise ValueError(f"{out_dir} holds features of another target / data / layout; use a new directory")
    done = {s["file"]: s for s in manifest.get("shards", []) if (out_dir / s["file"]).exists()}
    manifest = {**identity, "shards": sorted(done.values(), key=lambda s: s["start"]), "complete": False,
                "data": data}  # rows read / used / dropped / truncated
    device = next(model.parameters()).device
    written: List[str] = []
    starts = range(0, len(rows), shard_size)
    for start in tqdm(starts, desc="features", unit="shard"):
        name = f"shard_{start // shard_size:05d}.pt"
        if name in done:
            continue
        part = rows[start:start + shard_size]
        finals, auxes = [], []
        for b in range(0, len(part), batch_size):
            batch = {k: v.to(device) for k, v in collate(part[b:b + batch_size]).items()}
            final, aux = hidden_states(batch)
            finals.append(final.cpu())
            auxes.append(aux.cpu())
        manifest["shards"].append({"file": name, "start": start, "rows": len(part)})
        written.append(name)
        if not write:
            continue
        shard = {**collate(part), "base_model_hidden_states": torch.cat(finals), "aux_hidden_states": torch.cat(auxes)}
        tmp = out_dir / f".{name}.partial"
        torch.save(shard, tmp)
        tmp.replace(out_dir / name)  # a kill before this line leaves no shard: it is redone
        atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    manifest["complete"] = True
    if write:
        atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    return manifest, written


class FeaturesDataset:
    """Rows of a features dir in the form ModelOpt's offline forward takes."""

    def __init__(self, features_dir: Path, dtype=None):
        import torch

        self.dir = Path(features_dir)
        self.manifest = read_manifest(self.dir)
        self.rows = []
        for s in self.manifest["shards"]:
            shard = torch.load(self.dir / s["file"], weights_only=True)
            for i in range(s["rows"]):
                final, aux = shard["base_model_hidden_states"][i], shard["aux_hidden_states"][i]
                if dtype is not None:
                    final, aux = final.to(dtype), aux.to(dtype)
                self.rows.append({k: shard[k][i] for k in ("input_ids", "attention_mask", "loss_mask")}
                                 | {"base_model_outputs": {"base_model_hidden_states": final, "aux_hidden_states": aux}})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]
