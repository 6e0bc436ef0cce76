"""Parallel-layout arithmetic, written once: pipeline stage split, the expert-tensor size
fallback and world sizes. Used by validation, the dry-run plan, distributed init and the
launchers; plain integers in, plain integers out (works on DictConfigs and dataclasses).
"""

from __future__ import annotations

import math
import os
from typing import List


def expert_tensor_size(par) -> int:
    """ETP: parallel.expert_tensor, or the tensor size when unset (megatron-core's default)."""
    return int(par.expert_tensor if par.expert_tensor is not None else par.tensor)


def dense_group_size(par) -> int:
    """Processes one copy of the dense layers spans: TP x PP x CP."""
    return int(par.tensor * par.pipeline * par.context)


def expert_group_size(par) -> int:
    """Processes one copy of the expert layers spans: ETP x EP x PP."""
    return expert_tensor_size(par) * int(par.expert * par.pipeline)


def required_world_size(par) -> int:
    """The smallest world that holds the layout: TP x PP x CP x DP (DP null: 1), and a
    multiple of ETP x EP x PP (Kimi-K2's TP 8 / ETP 1 / EP 64 needs 64)."""
    return math.lcm(dense_group_size(par) * int(par.data or 1), expert_group_size(par))


def megatron_sizes(par) -> dict:
    """megatron-core's parallel-state keyword arguments for a `parallel=` config."""
    return {
        "tensor_model_parallel_size": int(par.tensor),
        "pipeline_model_parallel_size": int(par.pipeline),
        "context_parallel_size": int(par.context),
        "expert_model_parallel_size": int(par.expert),
        "expert_tensor_parallel_size": expert_tensor_size(par),
    }


def launched_world_size(cfg) -> int:
    """Processes this run was launched with: run.world_size, else WORLD_SIZE, else 1."""
    if cfg.run.world_size is not None:
        return int(cfg.run.world_size)
    return int(os.environ.get("WORLD_SIZE", "1"))


def world_size_problems(par, world: int) -> List[str]:
    """Why `world` processes cannot hold the layout (empty when they can)."""
    launched = f"{world} {'was' if world == 1 else 'were'} launched"
    dense = dense_group_size(par)
    problems = []
    if par.data is not None and dense * par.data != world:
        problems.append(
            f"parallel.data: TP {par.tensor} x PP {par.pipeline} x CP {par.context} x DP {par.data} = "
            f"{dense * par.data} processes, but {launched}. Fix: launch {dense * par.data} processes or "
            f"set parallel.data=null to derive it."
        )
    elif world % dense:
        problems.append(
            f"run.world_size: parallel={par.name} needs a multiple of TP x PP x CP = {dense} processes, "
            f"but {launched}. Fix: launch {dense} (or a multiple) processes, or pick a smaller layout."
        )
    experts = expert_group_size(par)
    if world % experts:
        problems.append(
            f"run.world_size: expert layers need a multiple of ETP x EP x PP = {experts} processes, "
            f"but {launched}."
        )
    return problems


def pipeline_stage_layers(num_layers: int, par) -> List[int]:
    """Layers on each pipeline stage, or ValueError saying why the split is impossible.

    Uneven splits fix the first and/or last stage (Megatron's
    --decoder-first/last-pipeline-num-layers); the stages between share the rest evenly.
    """
    pp = par.pipeline
    first, last = par.pipeline_first_stage_layers, par.pipeline_last_stage_layers
    if first is None and last is None:
        if num_layers % pp:
            raise ValueError(f"{num_layers} layers do not divide into {pp} equal pipeline stages")
        return [num_layers // pp] * pp
    if pp < 2:
        raise ValueError("first/last stage layer counts need parallel.pipeline >= 2")
    fixed = [n for n in (first, last) if n is not None]
    if any(n < 1 for n in fixed):
        raise ValueError("first/last stage layer counts must be >= 1")
    rest = num_layers - sum(fixed)
    shared = pp - len(fixed)  # stages that split the rest evenly
    parts = (
        f"{first} (first stage)" if first is not None else "",
        f"{shared} stage(s) x N" if shared else "",
        f"{last} (last stage)" if last is not None else "",
    )
    split = " + ".join(p for p in parts if p)
    if shared == 0:
        if rest != 0:
            raise ValueError(f"the split {split} holds {sum(fixed)} layers, not {num_layers}")
        return [first, last]
    if rest < shared or rest % shared:
        raise ValueError(
            f"the split {split} cannot hold {num_layers} layers: the remaining {rest} layers "
            f"do not divide evenly into {shared} stage(s)"
        )
    per = rest // shared
    stages = [per] * pp
    if first is not None:
        stages[0] = first
    if last is not None:
        stages[-1] = last
    return stages


EXPORT_TP_REFUSAL = (
    "export to Hugging Face needs parallel.tensor=1: ModelOpt's Megatron exporter writes each "
    "rank's tensor shard as if it were the whole weight (it does not gather tensor-parallel shards). "
    "Fix: parallel=export_pp (TP 1, pipeline stages instead; set parallel.pipeline to what fits)."
)
