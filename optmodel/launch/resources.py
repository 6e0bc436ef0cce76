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

from optmodel.facts.errors import one_of
from optmodel.facts.layout import required_world_size
from optmodel.launch.slurm import mem_mb


@dataclass(frozen=True)
class Allocation:
    nodes: int
    tasks_per_node: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node


def allocation(par: DictConfig, gpus_per_node: Optional[int], nodes: Optional[int] = None,
               tasks_per_node: Optional[int] = None, slots_per_node: Optional[int] = None) -> Allocation:
    """Nodes and ranks per node. Given values win; otherwise one rank per GPU (on a CPU
    partition: per CPU slot of a node) and as many nodes as the layout's world size needs
    (a 1-rank layout asks for one rank, not a node)."""
    per_node = tasks_per_node or gpus_per_node or slots_per_node or 1
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


def whole_nodes(launcher: Mapping[str, Any], alloc: Allocation, node_gpus: Optional[int]) -> bool:
    """exclusive=null: whole nodes only when the job uses every GPU of them, so small jobs
    of a sweep share a node instead of running one after another."""
    if launcher.get("exclusive") is not None:
        return bool(launcher["exclusive"])
    gpus = int(launcher.get("gpus_per_node") or 0)
    return bool(node_gpus) and gpus >= node_gpus and alloc.tasks_per_node >= node_gpus


def slurm_parameters(launcher: Mapping[str, Any], alloc: Allocation, job_name: str,
                     node_gpus: Optional[int] = None) -> Dict[str, Any]:
    """submitit SlurmExecutor parameters (names as in submitit's `_make_sbatch_string`).
    `launcher` carries the resolved gpus_per_node; node_gpus is what the partition's nodes have."""
    additional = dict(launcher.get("additional_parameters") or {})
    exclusive = whole_nodes(launcher, alloc, node_gpus)
    mem = launcher.get("mem")
    if mem is None and exclusive:
        mem = "0"  # a whole node: all of its memory; otherwise the site's default per CPU / GPU
    if mem is not None:
        additional["mem"] = str(mem)
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
    if exclusive:
        params["exclusive"] = True
    for key in ("cpus_per_task", "partition", "account", "qos", "constraint", "comment", "exclude"):
        if launcher.get(key) is not None:
            params[key] = launcher[key]
    return params


# Launcher numbers Slurm would refuse or misread (timeout 0 is "no limit" to Slurm), each with
# the smallest value that makes sense.
LAUNCHER_MINIMUMS = {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": 0, "cpus_per_task": 1, "timeout_min": 1}


def launcher_problems(launcher: Mapping[str, Any]) -> List[str]:
    """hydra.launcher numbers out of range, before any is used to size a job."""
    problems = []
    for key, least in LAUNCHER_MINIMUMS.items():
        value = launcher.get(key)
        if value is not None and value < least:
            why = " (Slurm reads a 0 time limit as none at all)" if key == "timeout_min" else ""
            fix = "null (derived from parallel=)" if key in ("nodes", "tasks_per_node") else f"a value >= {least}"
            problems.append(f"hydra.launcher.{key}: must be >= {least}, got {value}{why}. Fix: hydra.launcher.{key}={fix}.")
    return problems


def partition_problem(name: Optional[str], known: Optional[List[str]]) -> Optional[str]:
    """An unknown hydra.launcher.partition (known: sinfo's partitions; None off a Slurm cluster)."""
    if not name or known is None or name in known:
        return None

    return (one_of("hydra.launcher.partition", name, known) or "").replace("unknown value", "no Slurm partition named", 1) + \
        " Fix: hydra.launcher.partition=<one of them> (`sinfo -s` lists them), or null for the default partition."


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


def fit_problems(launcher: Mapping[str, Any], alloc: Allocation, part: Any) -> List[str]:
    """What sbatch would refuse or leave pending forever, against the partition's nodes
    (an optmodel.launch.slurm.Partition), each with its fix."""
    where = f"partition {part.name} ({part.nodes} node(s), {part.cpus} CPUs, {part.mem_mb} MB, {part.gpus} GPU(s) each)"
    gpus, problems = int(launcher.get("gpus_per_node") or 0), []
    if gpus and not part.gpus:
        problems.append(f"hydra.launcher.gpus_per_node: the job asks for {gpus} GPU(s) per node but {where} has "
                        f"no GPUs. Fix: hydra.launcher.gpus_per_node=null or 0 (a CPU job), or a GPU partition.")
    elif gpus > part.gpus:
        problems.append(f"hydra.launcher.gpus_per_node: the job asks for {gpus} GPU(s) per node; {where}. "
                        f"Fix: hydra.launcher.gpus_per_node=null (the partition's {part.gpus}).")
    if alloc.nodes > part.nodes:
        problems.append(f"the job needs {alloc.nodes} node(s) x {alloc.tasks_per_node} rank(s); {where}. It would "
                        f"stay pending forever. Fix: fewer nodes (hydra.launcher.nodes / "
                        f"tasks_per_node) or a partition with more nodes.")
    cpus = alloc.tasks_per_node * int(launcher.get("cpus_per_task") or 1)
    if cpus > part.cpus:
        problems.append(f"{alloc.tasks_per_node} rank(s) x {launcher.get('cpus_per_task') or 1} CPU(s) per node "
                        f"exceed {where}. Fix: hydra.launcher.cpus_per_task / tasks_per_node, or more nodes.")
    want = mem_mb(launcher["mem"]) if launcher.get("mem") is not None else None
    if want and want > part.mem_mb:
        problems.append(f"hydra.launcher.mem={launcher['mem']} exceeds {where}. Fix: a smaller mem, "
                        f"or mem=0 for all of a node's memory.")
    return problems
