"""megatron-core's parallel state on top of the process world (optmodel.distributed): set up
for a run's layout, torn down with the CPU adaptations (optmodel.backends.megatron_cpu)."""

from __future__ import annotations

from typing import Optional

from optmodel.backends.megatron_cpu import apply_cpu_patches, remove_cpu_patches, seed_model_parallel_rng
from optmodel.distributed import LaunchEnv, destroy_world, detect_launch_env, free_port, init_world
from optmodel.facts.layout import megatron_sizes, world_size_problems


def init_model_parallel(parallel_cfg, device: str = "cpu", seed: int = 1234, launch: Optional[LaunchEnv] = None) -> LaunchEnv:
    """Join the process world and set up megatron-core's parallel state for `parallel_cfg`.

    Works for a single process too (megatron-core needs a process group even then: a
    one-rank gloo/NCCL group on a free local port). Raises ValueError naming the layout
    when the world size does not fit it, before any group is created.
    Uneven first/last pipeline stages are a property of the model (TransformerConfig),
    not of the process groups: see optmodel.backends.megatron_spec.
    """
    import torch.distributed as dist

    launch = launch or detect_launch_env()
    world = dist.get_world_size() if dist.is_initialized() else launch.world_size
    problems = world_size_problems(parallel_cfg, world)
    if problems:
        raise ValueError("; ".join(problems))
    if device == "cpu":
        apply_cpu_patches()
    if not dist.is_initialized():
        if launch.world_size == 1:
            launch = LaunchEnv(master_port=free_port())
        _init_group(device, launch)
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        **megatron_sizes(parallel_cfg),
        # gloo side groups are only needed by the distributed optimizer; on CPU the main
        # groups are gloo already.
        create_gloo_process_groups=False,
    )
    seed_model_parallel_rng(seed)
    return launch


def _init_group(device: str, launch: LaunchEnv) -> None:
    """A process group even for one process (init_world skips that case on purpose)."""
    import torch
    import torch.distributed as dist

    if launch.world_size > 1:
        init_world(device, launch)
        return
    if device == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(
        backend="nccl" if device == "cuda" else "gloo",
        init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
        rank=0,
        world_size=1,
    )


def destroy_model_parallel() -> None:
    """Tear down megatron-core's groups, the CPU adaptations and the world (tests,
    sequential runs in one process)."""
    try:
        from megatron.core import parallel_state

        if parallel_state.model_parallel_is_initialized():
            parallel_state.destroy_model_parallel()
    except ImportError:
        pass
    remove_cpu_patches()
    destroy_world()
