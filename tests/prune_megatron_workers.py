"""backend=megatron pruning (ModelOpt's mcore_minitron) of a tiny model, in this process or
in spawned gloo processes: prune, logits of the pruned model in memory, save, reload into a
model built from the recorded architecture, logits again.

The numbers come back as a dict (rank 0's, with every rank's pieces gathered) that the
tests compare with backend=hf and across pipeline layouts.
"""

from __future__ import annotations

import os
import sys
import traceback


def calibration(model: str):
    """8 x 128 tokens of the bundled corpus, the tokens the tests score on."""
    from transformers import AutoTokenizer

    from optmodel.data.text import pack
    from optmodel.facts.records import read_records
    from optmodel.facts.paths import CORPUS_DIR, TINY_MODELS_DIR

    tok = AutoTokenizer.from_pretrained(TINY_MODELS_DIR / model)
    return pack(tok, read_records(CORPUS_DIR / "train.txt", "train"), 128, 8, "train")


def prune_and_reload(model: str, export_config: dict, out_dir: str, overrides=()) -> dict:
    """Prune `model` on megatron at the layout `overrides` give, save it, reload it."""
    from pathlib import Path

    import torch
    import torch.distributed as dist

    from conftest import compose_cfg
    from optmodel.backends import megatron as mb
    from optmodel.config.inherit import with_model_fields
    from optmodel.pruning.minitron import MegatronPruner

    cfg = compose_cfg(f"model={model}", "backend=megatron", "backend.device=cpu", "backend.dtype=float32", *overrides)
    ids = calibration(model)
    handle = mb.load(cfg)
    pruner = MegatronPruner(handle, out_dir, None)
    pruner.score(ids)
    info = pruner.prune(export_config)
    logits = handle.logits(ids[:2])
    arch = handle.architecture()
    own = arch["parameters_this_rank"]
    if handle.model.share_embeddings_and_output_weights and not handle.model.pre_process:
        own -= handle.model.output_layer.weight.numel()  # the last stage's copy of the tied embedding
    params = torch.tensor(own)
    dist.all_reduce(params)
    first = handle.model.embedding.word_embeddings.weight.detach().clone() if hasattr(handle.model, "embedding") else None
    embeddings = [None] * dist.get_world_size()
    dist.all_gather_object(embeddings, first)
    saved = handle.save(Path(out_dir) / "model")
    fields = {k: v for k, v in arch.items() if k in cfg.model}
    stages = [None] * dist.get_world_size()
    dist.all_gather_object(stages, len(handle.model.decoder.layers))
    if cfg.parallel.pipeline == 2:  # the stages as depth pruning left them
        overrides = [*overrides, f"parallel.pipeline_first_stage_layers={stages[0]}",
                     f"parallel.pipeline_last_stage_layers={stages[-1]}"]
    cfg = compose_cfg(f"model={model}", "backend=megatron", "backend.device=cpu", "backend.dtype=float32", *overrides)
    reloaded = mb.load(_with_model(cfg, with_model_fields(cfg.model, fields)), saved)
    return {"logits": logits, "logits_reloaded": reloaded.logits(ids[:2]), "parameters": int(params),
            "architecture": arch, "kept_layers": info.get("kept_layers"),
            "embedding": next(e for e in embeddings if e is not None), "scores": str(pruner.written), "saved": str(saved)}


def _with_model(cfg, model_cfg):
    from omegaconf import open_dict

    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model = model_cfg
    return cfg


def run(rank: int, world: int, port: int, jobs: list, out_path: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), HF_HUB_OFFLINE="1")
    import torch

    torch.set_num_threads(1)
    results = {}
    try:
        for name, model, export_config, overrides in jobs:
            out = os.path.join(os.path.dirname(out_path), name)
            results[name] = prune_and_reload(model, export_config, out, [f"run.world_size={world}", *overrides])
    except Exception:
        with open(f"{out_path}.rank{rank}.error", "w") as f:
            f.write(traceback.format_exc())
        raise
    if rank == 0:
        torch.save(results, out_path)
    from optmodel.backends.megatron_world import destroy_model_parallel

    destroy_model_parallel()


def spawn(jobs: list, out_path: str, world: int = 2) -> dict:
    """Run the pruning `jobs` ((name, model, export_config, overrides)) in `world` gloo processes."""
    import torch
    import torch.multiprocessing as mp

    from optmodel.distributed import free_port

    sys.path.insert(0, os.path.dirname(__file__))
    mp.spawn(run, args=(world, free_port(), jobs, out_path), nprocs=world, join=True)
    return torch.load(out_path, weights_only=False)
