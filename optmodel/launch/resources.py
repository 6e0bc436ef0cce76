"""What a Slurm (or local multi-rank) job asks for, from the launcher preset and `parallel=`.

One rank per GPU: tasks_per_node = gpus_per_node, and the node count follows from the
world size the `parallel=` layout needs when the preset does not fix it.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from omegaconf import DictConfig

from optmodel.config.layout import required_world_size


@dataclass(frozen=True)
class Allocation:
    nodes: int
    tasks_per_node: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node


def allocation(par: DictConfig, gpus_per_node: Optional[int], nodes: Optional[int] = None,
               tasks_per_node: Optional[int] = None) -> Allocation:
    """Nodes and ranks per node. Given values win; otherwise one rank per GPU and as many
    nodes as the layout's world size needs (a 1-rank layout asks for one rank, not a node)."""
    per_node = tasks_per_node or gpus_per_node or 1
    if nodes is not None:
        return Allocation(nodes=nodes, tasks_per_node=per_node)
    world = required_world_size(par)
    if tasks_per_node is None and world < per_node:
        return Allocation(nodes=1, tasks_per_node=world)
    return Allocation(nodes=math.ceil(world / per_node), tasks_per_node=per_node)


def env_exports(env: Mapping[str, Any]) -> List[str]:
    """`export K=V` lines (quoted) for the sbatch script; sorted so scripts diff cleanly."""
    return [f"export {key}={shlex.quote(str(value))}" for key, value in sorted(env.items()) if value is not None]


def srun_args(image: Optional[str], mounts: Optional[str], workdir: Optional[str],
                        extra: Optional[List[str]] = None) -> List[str]:
    """srun flags: pyxis container ones make every task start inside the container image."""
    args = ["--kill-on-bad-exit=1"]  # one failed rank ends the step instead of leaving the others hung
    if image:
        args.append(f"--container-image={image}")
    if mounts:
        args.append(f"--container-mounts={mounts}")
    if workdir:
        args.append(f"--container-workdir={workdir}")
    return args + list(extra or [])


def slurm_parameters(launcher: Mapping[str, Any], alloc: Allocation, job_name: str) -> Dict[str, Any]:
    """submitit SlurmExecutor parameters (names as in submitit's `_make_sbatch_string`)."""
    additional = dict(launcher.get("additional_parameters") or {})
    if launcher.get("mem") is not None:
        additional["mem"] = str(launcher["mem"])  # "0": all of each node's memory
    params: Dict[str, Any] = {
        "job_name": job_name,
        "nodes": alloc.nodes,
        "ntasks_per_node": alloc.tasks_per_node,
        "time": int(launcher["timeout_min"]),
        "signal_delay_s": int(launcher["signal_delay_s"]),
        "setup": list(launcher.get("setup") or []) + env_exports(launcher.get("env") or {}),
        "srun_args": srun_args(launcher.get("container_image"), launcher.get("container_mounts"),
                                         launcher.get("container_workdir"), launcher.get("srun_args")),
        "stderr_to_stdout": bool(launcher.get("stderr_to_stdout", False)),
        "additional_parameters": additional,
    }
    if launcher.get("gpus_per_node"):
        params["gpus_per_node"] = int(launcher["gpus_per_node"])
    if launcher.get("exclusive"):
        params["exclusive"] = True
    for key in ("cpus_per_task", "partition", "account", "qos", "constraint", "comment", "exclude"):
        if launcher.get(key) is not None:
            params[key] = launcher[key]
    return params


def container_mount_problems(image: Optional[str], mounts: Optional[str], paths: List[str]) -> List[str]:
    """Run dirs and submitit's folder are read at the same path inside the container, so a
    mount must map each of them onto itself (`/lustre:/lustre`, or `/lustre`)."""
    if not image:
        return []
    same_path = []
    for spec in (mounts or "").split(","):
        parts = spec.strip().split(":")
        if parts[0] and (len(parts) == 1 or parts[1] in ("", parts[0])):
            same_path.append(parts[0].rstrip("/") or "/")
    problems, unmounted = [], []
    for path in sorted(set(paths)):  # parents first: one problem for a sweep dir and its jobs
        if any(path.startswith(u.rstrip("/") + "/") for u in unmounted):
            continue
        if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in same_path):
            top = "/" + path.strip("/").split("/")[0]
            unmounted.append(path)
            problems.append(
                f"hydra.launcher.container_mounts: {path} is not mounted at the same path in the container "
                f"(mounts: {mounts or 'none'}), so the job could neither load its submission nor write its run dir. "
                f"Fix: mount the shared file system holding it, e.g. hydra.launcher.container_mounts={top}:{top}."
            )
    return problems
