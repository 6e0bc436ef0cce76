"""The process world of a run: which rank this process is, and a torch.distributed group.

One place reads the launch environment, whatever started the processes:
- nothing (a single process): rank 0 of 1, no process group;
- torchrun / optmodel's local multi-process launcher: RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR, MASTER_PORT;
- Slurm srun / submitit: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST
  (the first node hosts the rendezvous).
torchrun variables win when both are present (torchrun inside an allocation).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional


DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class LaunchEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT
    launcher: str = "single"  # single | torchrun | slurm

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0


def first_slurm_host(nodelist: str) -> str:
    """First host of a Slurm node list: 'gpu[003-005,9],cpu1' -> 'gpu003'."""
    first = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not first:
        raise ValueError(f"cannot parse Slurm node list {nodelist!r}")
    prefix, ranges = first.group(1), first.group(3)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def detect_launch_env(environ: Optional[Mapping[str, str]] = None) -> LaunchEnv:
    env = os.environ if environ is None else environ
    port = int(env.get("MASTER_PORT", DEFAULT_MASTER_PORT))
    if "RANK" in env and "WORLD_SIZE" in env:
        return LaunchEnv(
            rank=int(env["RANK"]),
            local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
            world_size=int(env["WORLD_SIZE"]),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=port,
            launcher="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        if "MASTER_PORT" not in env and "SLURM_JOB_ID" in env:
            # Jobs sharing a node must not share a rendezvous port.
            port = 20000 + int(env["SLURM_JOB_ID"]) % 20000
        return LaunchEnv(
            rank=int(env["SLURM_PROCID"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            world_size=int(env["SLURM_NTASKS"]),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=port,
            launcher="slurm",
        )
    return LaunchEnv()


def init_world(device: str = "cpu", launch: Optional[LaunchEnv] = None) -> LaunchEnv:
    """Join the process group of this launch (NCCL on cuda, gloo on cpu); a no-op for a
    single process or when a group already exists. Returns the launch env."""
    import torch
    import torch.distributed as dist

    launch = launch or detect_launch_env()
    if launch.world_size == 1 or dist.is_initialized():
        return launch
    if device == "cuda":
        torch.cuda.set_device(launch.local_rank % torch.cuda.device_count())
    dist.init_process_group(
        backend="nccl" if device == "cuda" else "gloo",
        init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
        rank=launch.rank,
        world_size=launch.world_size,
    )
    return launch


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else detect_launch_env().rank


def is_rank0() -> bool:
    return rank() == 0


def broadcast_from_rank0(obj):
    """`obj` as rank 0 has it, on every rank (itself in a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def destroy_world() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port nobody listens on right now (single-process worlds, test spawns)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
