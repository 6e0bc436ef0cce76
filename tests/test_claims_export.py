"""task.export_dtype decides the dtype of the exported weights that stay unquantized (issue 20)."""

from __future__ import annotations

import json

from optmodel.run import execute

from conftest import compose_cfg


def test_export_dtype_float16_writes_float16_unquantized_tensors_and_fp8_weights(tmp_path):
    execute(compose_cfg("task.export_dtype=float16", "task.save_model=false", "data.num_samples=2",
                        "data.seq_len=32", "data.eval_max_sequences=2"), tmp_path)
    dtypes = {}
    for shard in (tmp_path / "export").glob("*.safetensors"):
        raw = shard.read_bytes()
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])  # the safetensors header, read here
        dtypes.update({k: v["dtype"] for k, v in header.items() if k != "__metadata__"})
    norms = {k: v for k, v in dtypes.items() if k.endswith("norm.weight")}
    assert norms and set(norms.values()) == {"F16"}, norms
    assert dtypes["model.embed_tokens.weight"] == "F16"
    assert dtypes["model.layers.0.mlp.down_proj.weight"] == "F8_E4M3"  # the quantized weights stay FP8
    assert not any(v in ("BF16", "F32") for k, v in dtypes.items() if k.endswith(".weight") and "scale" not in k)
