"""Schemas of optmodel's launchers; the presets in conf/hydra/launcher/ build on them.

A misspelt launcher field fails at composition with its path, like any optmodel field.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

PACKAGE = "hydra_plugins.optmodel_launchers.launchers"


@dataclass
class LocalConf:
    """Jobs one after another in this process (one rank each)."""

    _target_: str = f"{PACKAGE}.OptmodelLocalLauncher"
    fail_fast: bool = False  # stop the sweep at the first failed job


@dataclass
class LocalRanksConf:
    """Each job as N processes on this machine, one per rank (GPU), in one process group."""

    _target_: str = f"{PACKAGE}.OptmodelLocalRanksLauncher"
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
    tasks_per_node: Optional[int] = None  # ranks; null: the world size parallel= needs
    gpus_per_node: Optional[int] = None  # GPUs given to the job (null: none / all visible)
    timeout_min: float = 1440
    signal_delay_s: int = 60
    max_num_timeout: int = 3  # requeues of a resumable task after a timeout
    env: Dict[str, str] = field(default_factory=dict)  # set in every rank
    fail_fast: bool = False
    wait: bool = True  # local jobs always run to the end; kept for symmetry with slurm
    name: str = "${hydra.job.name}"


@dataclass
class SlurmConf:
    """Each job as one Slurm job (sbatch + srun through submitit); every task one rank."""

    _target_: str = f"{PACKAGE}.OptmodelSlurmLauncher"
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
    nodes: Optional[int] = None  # null: derived from the parallel= sizes
    gpus_per_node: Optional[int] = None  # null: what the partition's nodes have (sinfo); 0: a CPU job
    tasks_per_node: Optional[int] = None  # null: gpus_per_node (one rank per GPU; CPU: per CPU of a node)
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None  # null: all of a node ("0") for whole nodes, else the site's default
    exclusive: Optional[bool] = None  # null: whole nodes only when the job uses all their GPUs
    timeout_min: int = 240
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    comment: Optional[str] = None
    exclude: Optional[str] = None
    # pyxis: srun --container-image/--container-mounts/--container-workdir
    container_image: Optional[str] = None
    container_mounts: Optional[str] = None  # must include the dir holding the sweep / run dir
    container_workdir: Optional[str] = None
    python: Optional[str] = None  # null: this interpreter, or `python` inside a container
    setup: List[str] = field(default_factory=list)  # sbatch lines before srun (module load, source ...)
    env: Dict[str, str] = field(default_factory=dict)  # exported to every task
    srun_args: List[str] = field(default_factory=list)
    additional_parameters: Dict[str, Any] = field(default_factory=dict)  # any other #SBATCH flag
    signal_delay_s: int = 120  # USR2 this long before the time limit: save and requeue
    max_num_timeout: int = 3  # requeues of a resumable task
    stderr_to_stdout: bool = False
    wait: bool = True  # false: return after sbatch, printing job ids and log paths
    fail_fast: bool = False  # cancel the other jobs at the first failure
    name: str = "${hydra.job.name}"


cs = ConfigStore.instance()
cs.store(group="hydra/launcher", name="optmodel_local", node=LocalConf, provider="optmodel")
cs.store(group="hydra/launcher", name="optmodel_local_ranks", node=LocalRanksConf, provider="optmodel")
cs.store(group="hydra/launcher", name="optmodel_slurm", node=SlurmConf, provider="optmodel")
