"""Entry point of the two-rank EAGLE3 runs on backend=megatron (CPU gloo): each scenario
runs a task through optmodel.run.execute in both processes; rank 0 writes the metrics to a
JSON file the test reads."""

from __future__ import annotations

import json
import os
import sys
import traceback


def run_scenarios(rank: int, world: int, port: int, scenarios: list, out_path: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    import torch

    torch.set_num_threads(1)
    from conftest import compose_cfg
    from optmodel.distributed import destroy_model_parallel
    from optmodel.run import execute

    results = {}
    try:
        for name, overrides, run_dir in scenarios:
            results[name] = execute(compose_cfg(*overrides, f"run.world_size={world}"), run_dir)
            torch.distributed.barrier()
    except Exception:
        results["error"] = traceback.format_exc()
        raise
    finally:
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(results, f, default=str)
        destroy_model_parallel()


def spawn(scenarios: list, out_path: str, world: int = 2) -> dict:
    import torch.multiprocessing as mp

    from optmodel.distributed import free_port

    mp.spawn(run_scenarios, args=(world, free_port(), scenarios, out_path), nprocs=world, join=True)
    with open(out_path) as f:
        return json.load(f)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    print(json.dumps(spawn(json.loads(sys.argv[1]), sys.argv[2]), indent=1))
