"""Torch CPU threads for small models on shared cores."""

from __future__ import annotations

import contextlib
from typing import Iterator

SMALL_MODEL_PARAMETERS = 50_000_000


@contextlib.contextmanager
def small_model_threads(model) -> Iterator[None]:
    """One torch intra-op thread while a small model (under 50 M parameters: the bundled ones)
    trains or decodes on CPU: its ops split too little work per thread, and on shared cores a
    second thread mostly waits. Measured on 2 cores shared with other processes: an EAGLE3
    training step of the bundled target took 20 s at torch's default 2 threads and 1 s with one;
    an AL check 28 s per prompt against 1.1 s. Larger models and GPU runs keep torch's count."""
    import torch

    first = next(model.parameters(), None)
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS
    if first is None or first.device.type != "cpu" or not small:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
