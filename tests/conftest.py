"""Shared fixtures: compose configs through Hydra's compose API, no app run."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

from optmodel.config.schema import register_schemas
from optmodel.paths import conf_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

register_schemas()


def compose_cfg(*overrides: str):
    """The run config `optmodel <overrides>` would get."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on shared cores: torch threads only spin against each other. Restored after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", autouse=True)
def no_process_group_left_behind():
    """A module that built a megatron model (or any process group) in this process tears it
    down, so later modules start without a world (they would find world size 1)."""
    yield
    import sys

    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from optmodel.distributed import destroy_model_parallel

        destroy_model_parallel()
