"""Entry point of two-rank task runs on backend=megatron (CPU gloo): each scenario is
optmodel.run.execute (the task as a user runs it) in one spawn of two processes, so the
import cost is paid once. The tests read each run's outputs from its run dir; rank 0 writes
the metrics to a JSON file (a failing rank writes its traceback beside it)."""

from __future__ import annotations

import contextlib
import json
import os
import traceback


def join_gloo_world(rank: int, world: int, port: int) -> None:
    """This spawned process as `rank` of a `world`-process launch (the env torchrun would set)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    import torch

    torch.set_num_threads(1)


@contextlib.contextmanager
def recorded_results(rank: int, out_path: str):
    """Yield the results dict the scenarios fill: a failing rank writes its traceback to
    `<out_path>.rank<N>`, rank 0 writes the results to `out_path`; the world is torn down."""
    from optmodel.backends.megatron_world import destroy_model_parallel

    results = {}
    try:
        yield results
    except Exception:
        with open(out_path + f".rank{rank}", "w") as f:
            f.write(traceback.format_exc())
        raise
    finally:
        destroy_model_parallel()
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f, default=str)


def run_scenarios(rank: int, world: int, port: int, scenarios: list, out_path: str) -> None:
    join_gloo_world(rank, world, port)
    import torch

    from conftest import compose_cfg
    from optmodel.run import execute

    with recorded_results(rank, out_path) as results:
        for name, overrides, run_dir in scenarios:
            results[name] = execute(compose_cfg(*overrides, f"run.world_size={world}"), run_dir)
            torch.distributed.barrier()  # a later scenario may read this one's outputs


def spawn(scenarios: list, out_path: str, world: int = 2) -> dict:
    """Run `scenarios` ([name, overrides, run dir]) in `world` gloo processes; rank 0's metrics."""
    import torch.multiprocessing as mp

    from optmodel.distributed import free_port

    mp.spawn(run_scenarios, args=(world, free_port(), scenarios, out_path), nprocs=world, join=True)
    with open(out_path) as f:
        return json.load(f)
