"""How saved models are stored: the checkpoint's dtype where exact, shards like the input's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

DEFAULT_SHARD_SIZE = "5GB"  # the Hugging Face Hub's usual shard size, for an unsharded input
# Elements compared at once by `exact_cast`: its wide temporaries stay at 16 MiB (float32) instead of
# the whole tensor (a Qwen3 embedding: 622 MB of float32 on top of the model).
CAST_CHECK_ELEMENTS = 1 << 22


def shard_size_like(source: Optional[Path]) -> int | str:
    """max_shard_size for a save of a model loaded from `source`: its largest shard (so a
    300 MB-shard checkpoint saves as 300 MB shards), else DEFAULT_SHARD_SIZE."""
    if source is None or not Path(source).is_dir():
        return DEFAULT_SHARD_SIZE
    shards = sorted(Path(source).glob("*.safetensors"))
    if len(shards) < 2:
        return DEFAULT_SHARD_SIZE
    return max(f.stat().st_size for f in shards)


def stored_state_dict(model, dtype_name: str) -> dict:
    """model.state_dict() with every floating parameter in `dtype_name` when the cast is exact
    (round trip equal); other tensors (quantizer amax / scales, folded weights) as they are."""
    import torch

    target = getattr(torch, dtype_name)
    state, casts = {}, {}  # casts: one narrow copy per storage, so tied weights (embeddings = lm_head) stay tied
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and tensor.dtype != target and _is_parameter(model, name):
            key = (tensor.data_ptr(), tuple(tensor.shape))
            if key not in casts:
                cast = exact_cast(tensor, target)
                casts[key] = cast if cast is not None else tensor
            tensor = casts[key]
        state[name] = tensor
    return state


def exact_cast(tensor, target):
    """`tensor` in dtype `target` when that cast round-trips to the same values, else None. The
    round trip is compared block by block: memory beyond the narrow copy is one block."""
    import torch

    narrow = tensor.detach().to(target)
    wide, flat = tensor.detach().reshape(-1), narrow.reshape(-1)
    for start in range(0, wide.numel(), CAST_CHECK_ELEMENTS):
        block = slice(start, start + CAST_CHECK_ELEMENTS)
        if not torch.equal(flat[block].to(wide.dtype), wide[block]):
            return None
    return narrow


def _is_parameter(model, name: str) -> bool:
    module_name, _, leaf = name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        return False
    return leaf in module._parameters


def write_stored_dtype(saved: Path, dtype_name: str) -> None:
    """config.json names the dtype the weights are stored in (what `backend.dtype=auto` reads)."""
    path = Path(saved) / "config.json"
    config = json.loads(path.read_text())
    config["dtype"] = dtype_name
    if "torch_dtype" in config:
        config["torch_dtype"] = dtype_name
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
