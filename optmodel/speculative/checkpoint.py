"""EAGLE3 training checkpoints that hold what trains: the draft and its optimizer state.

The frozen target is not saved (at Qwen3-0.6B shape it is most of a 1.4 GB checkpoint of a
2 MB draft): `optmodel_target.json` names it by path and by a fingerprint of its embeddings
and LM head (what online and offline training both hold), and a resume against another
target is refused. The Trainer's optimizer, scheduler, RNG and step files are unchanged, and the
checkpoints are the training stack's (optmodel.training.checkpoints: marked complete once whole)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Optional

log = logging.getLogger("optmodel")

DRAFT_PREFIX = "eagle_module."
WEIGHTS = "model.safetensors"
TARGET_NOTE = "optmodel_target.json"


def draft_state(model) -> dict:
    """The draft's tensors (parameters and buffers such as d2t) of a converted model."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(DRAFT_PREFIX)}


def target_identity(model, path: Optional[str]) -> dict:
    """The target's path and a fingerprint of its embeddings and LM head (a strided sample)."""
    import torch

    h = hashlib.sha256()
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        w = module.weight.detach().flatten()
        h.update(str(tuple(module.weight.shape)).encode())
        h.update(w[:: max(1, w.numel() // 65536)].to(torch.float32).cpu().numpy().tobytes())
    return {"target": str(path) if path else None, "fingerprint": h.hexdigest()[:16]}


def draft_trainer(target: Optional[dict] = None):
    """transformers' Trainer saving and loading the draft only, for the training stack's `fit`
    (`trainer_class`); `target`: target_identity of the run (imported on use: heavy)."""
    from safetensors.torch import load_file, save_file
    from transformers import Trainer

    identity = target

    class DraftTrainer(Trainer):
        kind = "eagle3"
        target: Optional[dict] = identity

        def _save(self, output_dir: Optional[str] = None, state_dict: Optional[dict] = None) -> None:
            import torch

            out = Path(output_dir or self.args.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().contiguous().cpu() for k, v in draft_state(self.model).items()}
            save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
            (out / TARGET_NOTE).write_text(json.dumps(self.target or {}, indent=2))
            torch.save(self.args, os.path.join(out, "training_args.bin"))

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
            model = model or self.model
            check_target(Path(resume_from_checkpoint), self.target)
            saved = load_file(str(Path(resume_from_checkpoint) / WEIGHTS))
            own = draft_state(model)
            if set(saved) != set(own):
                raise ValueError(f"{resume_from_checkpoint} holds another draft: missing {sorted(set(own) - set(saved))}, "
                                 f"unexpected {sorted(set(saved) - set(own))}. Fix: a new run dir, or run.resume=false.")
            model.load_state_dict(saved, strict=False)

    return DraftTrainer


def check_target(checkpoint: Path, current: Optional[dict]) -> None:
    """Refuse a checkpoint trained against another target (its fingerprint differs)."""
    note_path = Path(checkpoint) / TARGET_NOTE
    saved = json.loads(note_path.read_text()) if note_path.is_file() else {}
    if not current or not saved:
        return
    if saved.get("fingerprint") != current.get("fingerprint"):
        raise ValueError(f"{checkpoint} trained a draft for target {saved.get('target')} (fingerprint "
                         f"{saved.get('fingerprint')}); this run's target {current.get('target')} differs "
                         f"({current.get('fingerprint')}). Fix: the same target, a new run dir, or run.resume=false.")
    if saved.get("target") != current.get("target"):
        log.warning("resuming %s: its target was %s, now %s (same embeddings and LM head)", checkpoint,
                    saved.get("target"), current.get("target"))
