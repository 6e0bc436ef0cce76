"""Entry points of the multi-process megatron tests (spawned by torch.multiprocessing).

One spawn of two gloo processes runs every scenario of a test module in turn, changing
only megatron's parallel state between scenarios, so the import cost is paid once.
Rank 0 writes the measured numbers to a JSON file the test reads.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def _cfg(model: str, *overrides: str):
    from conftest import compose_cfg

    return compose_cfg(f"model={model}", "backend=megatron", "backend.device=cpu", "backend.dtype=float32",
                       "run.world_size=2", *overrides)


def _hf_logits(model_name: str, ids):
    import torch
    from transformers import AutoModelForCausalLM

    from optmodel.facts.paths import TINY_MODELS_DIR

    hf = AutoModelForCausalLM.from_pretrained(TINY_MODELS_DIR / model_name, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(ids).logits


def _hf_state(model_name: str):
    from safetensors.torch import load_file

    from optmodel.facts.paths import TINY_MODELS_DIR

    return load_file(str(TINY_MODELS_DIR / model_name / "model.safetensors"))


def run_scenarios(rank: int, world: int, port: int, scenarios: list, out_path: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), HF_HUB_OFFLINE="1")
    import torch

    from optmodel.backends import megatron as mb

    results = {}
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    try:
        for name, model, overrides in scenarios:
            cfg = _cfg(model, *overrides)
            handle = mb.load(cfg)
            logits = handle.logits(ids)
            ref = _hf_logits(model, ids)
            entry = {
                "max_abs_diff": (logits - ref).abs().max().item(),
                "layers": mb.stage_layers(handle.model),
                "params": sum(p.numel() for p in handle.model.parameters()),
            }
            if cfg.parallel.pipeline > 1:
                entry["weights_match_hf"] = _stage_weights_match(handle, model)
                # export at TP 1 / PP 2: every stage writes its layers
                entry["export"] = str(mb.export_hf(handle, os.path.join(os.path.dirname(out_path), f"{name}_export")))
            if cfg.parallel.expert > 1:
                entry["local_experts"] = len(handle.model.decoder.layers[-1].mlp.experts.local_experts)
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, entry)
            results[name] = gathered
    except Exception:
        results["error"] = f"rank {rank}: {traceback.format_exc()}"
        if rank == 0 or not os.path.exists(out_path):
            with open(out_path + f".rank{rank}", "w") as f:
                json.dump(results, f)
        raise
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)
    from optmodel.backends.megatron_world import destroy_model_parallel

    destroy_model_parallel()


def _stage_weights_match(handle, model_name: str) -> bool:
    """Every decoder layer of this stage holds HF's weights for its global layer index."""
    import torch

    hf = _hf_state(model_name)
    for layer in handle.model.decoder.layers:
        i = layer.layer_number - 1
        ours = layer.self_attention.linear_proj.weight
        theirs = hf[f"model.layers.{i}.self_attn.o_proj.weight"].float()
        norm = layer.pre_mlp_layernorm.weight
        if not (torch.equal(ours, theirs) and torch.equal(norm, hf[f"model.layers.{i}.post_attention_layernorm.weight"].float())):
            return False
    return True


def spawn(scenarios: list, out_path: str, world: int = 2) -> dict:
    """Run `scenarios` in `world` gloo processes; the results rank 0 wrote."""
    import torch.multiprocessing as mp

    from optmodel.distributed import free_port

    mp.spawn(run_scenarios, args=(world, free_port(), scenarios, out_path), nprocs=world, join=True)
    with open(out_path) as f:
        return json.load(f)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    print(json.dumps(spawn(json.loads(sys.argv[1]), sys.argv[2]), indent=1))
