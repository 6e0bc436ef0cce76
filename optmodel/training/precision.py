"""Mixed precision for every training task on backend=hf: fp32 master weights, compute in the
model's dtype.

A model held in bf16 / fp16 (backend.dtype, or `auto` on a GPU / an AMX CPU) would otherwise be
trained in that dtype: AdamW adds each step to bf16 numbers, and a step below half a bf16
rounding step (most of them at lr 1e-5 .. 5e-5) is lost. So, for the run, the trainable
parameters are float32 (the optimizer and its moments follow them) and the forward / backward
compute in the model's dtype under autocast (transformers' Trainer `bf16=True` / `fp16=True`),
as megatron's optimizer keeps fp32 main params beside bf16 ones. Frozen parameters (a teacher,
the EAGLE3 target) stay in the compute dtype. When training ends the trainable parameters go
back to the compute dtype — the fp32 master weights rounded once — so the trained model computes
as the loaded one did; the resumable checkpoints hold the fp32 weights and optimizer state.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List

HALF = ("bfloat16", "float16")


def compute_dtype(model):
    """The dtype most of the model's floating parameters are held in (its compute dtype)."""
    counts = Counter(p.dtype for p in model.parameters() if p.is_floating_point())
    return counts.most_common(1)[0][0] if counts else None


@dataclass
class MasterWeights:
    """Trainable parameters upcast to float32 for a run; `restore` rounds them back."""

    compute: Any  # torch.dtype the model computes in
    upcast: List[Any] = field(default_factory=list)  # (parameter, its dtype before)

    def autocast_dtype(self, bf16_requested: bool = False):
        """The autocast dtype of the run: the compute dtype when it is half, bf16 when asked
        (training.bf16 on a float32 model), else None (plain float32)."""
        import torch

        if str(self.compute).replace("torch.", "") in HALF:
            return self.compute
        return torch.bfloat16 if bf16_requested else None

    def restore(self) -> None:
        for param, dtype in self.upcast:
            param.data = param.data.to(dtype)
        self.upcast = []


def master_weights(model) -> MasterWeights:
    """Upcast the trainable half-precision parameters of `model` to float32, in place."""
    import torch

    found = MasterWeights(compute=compute_dtype(model))
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != torch.float32:
            found.upcast.append((param, param.dtype))
            param.data = param.data.float()
    return found


def trainer_precision(autocast) -> Dict[str, bool]:
    """TrainingArguments' mixed-precision flags for an autocast dtype (None: none)."""
    import torch

    return {"bf16": autocast == torch.bfloat16, "fp16": autocast == torch.float16}


@contextlib.contextmanager
def compute_autocast(model) -> Iterator[None]:
    """Forward passes outside the Trainer while the trainable parameters are float32 (an AL check
    mid-training): autocast to the model's compute dtype when that is half, else nothing."""
    import torch

    dtype = compute_dtype(model)
    if str(dtype).replace("torch.", "") not in HALF:
        yield
        return
    with torch.autocast(device_type=next(model.parameters()).device.type, dtype=dtype):
        yield


def uses_cpu(model) -> bool:
    """Whether the Trainer runs on CPU: where the model's parameters are."""
    return next(model.parameters()).device.type == "cpu"

