"""Training runs the tests start as subprocesses (a SIGKILL must hit a whole process).

    python tests/training_workers.py <out_dir> <steps> <save_every> [--kill-at STEP] [--resume]

Distils the bundled tiny Qwen3 model into a copy with its third layer dropped, through
optmodel.training.fit (ModelOpt's KDTrainer), and saves the student to <out_dir>/final.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


def tiny_models(drop_layer: int = 2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optmodel.facts.paths import TINY_MODELS_DIR

    path = TINY_MODELS_DIR / "tiny_qwen3"
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    student = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    drop_decoder_layer(student, drop_layer)
    return teacher, student, AutoTokenizer.from_pretrained(path)


def drop_decoder_layer(model, index: int) -> None:
    """Depth pruning by hand: remove one decoder layer and renumber the rest."""
    del model.model.layers[index]
    for i, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = i
    model.config.num_hidden_layers = len(model.model.layers)
    model.config.layer_types = model.config.layer_types[: len(model.model.layers)]


def distil(out: Path, steps: int, save_every: int, kill_at: int = 0, resume: bool = False) -> int:
    """The run the kill-and-resume test repeats; returns the step it resumed from."""
    import torch
    from omegaconf import OmegaConf
    from transformers import TrainerCallback

    from optmodel.data.sft import build_sft_dataset
    from optmodel.facts.records import read_records
    from optmodel.facts.paths import CORPUS_DIR
    from optmodel.training.config import DistillationConfig, TrainingConfig
    from optmodel.training.loop import fit

    torch.set_num_threads(1)

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    teacher, student, tok = tiny_models()
    train = build_sft_dataset(tok, read_records(CORPUS_DIR / "train.txt", "train"), 64, "pack", 64)
    training = OmegaConf.structured(TrainingConfig(max_steps=steps, micro_batch_size=4, global_batch_size=4,
                                                   lr=1e-3, warmup_steps=2, save_every=save_every, log_every=2))
    result = fit(student, training, train, output_dir=out / "checkpoints", seed=7, teacher=teacher,
                 distillation=OmegaConf.structured(DistillationConfig()), resume=resume,
                 extra_callbacks=[KillAt()] if kill_at else None)
    result.model.save_pretrained(out / "final")
    return result.metrics["train_resumed_from_step"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("steps", type=int)
    parser.add_argument("save_every", type=int)
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    opts = parser.parse_args()
    resumed = distil(opts.out, opts.steps, opts.save_every, opts.kill_at, opts.resume)
    print(f"resumed_from_step={resumed}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
