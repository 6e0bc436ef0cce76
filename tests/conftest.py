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


def stand_in(key: str, tmp_path, model: str = "tiny_qwen3", what: str = "") -> str:
    """A value for an input a recipe or README command leaves to the user (`key=<what>`),
    good enough for its config checks, which read the file: run dirs, chats, a features dump."""
    import json

    def chats(name):
        path = tmp_path / name
        path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                 {"role": "assistant", "content": "hello"}]}) + "\n")
        return str(path)

    if key == "run.load" and "eagle3" in what:  # an eagle3 run: its manifest names the exported draft
        run = tmp_path / "eagle3_run"
        (run / "draft").mkdir(parents=True, exist_ok=True)
        (run / "draft" / "config.json").write_text(json.dumps({  # what validation reads of an exported draft
            "num_hidden_layers": 1, "draft_vocab_size": 256, "intermediate_size": 384,
            "eagle_config": {"eagle_aux_hidden_state_layer_ids": [1, 2, 3]}}))
        (run / "draft" / "model.safetensors").write_bytes(b"")
        (run / "optmodel.json").write_text(json.dumps({"outputs": {"draft": str(run / "draft")}}))
        return str(run)
    if key in ("run.load", "task.load", "model.checkpoint"):
        return str(tmp_path)
    if key in ("run.output_dir", "task.output_dir"):
        return str(tmp_path / "out")
    if key in ("task.conversations", "data.calib_path", "data.eval_path"):
        return chats(key.split(".")[-1] + ".jsonl")
    if key == "task.acceptance.prompts":
        (tmp_path / "prompts.jsonl").write_text(json.dumps({"turns": ["Why is the sky blue?"]}) + "\n")
        return str(tmp_path / "prompts.jsonl")
    if key == "task.prompts_file":
        (tmp_path / "prompts.txt").write_text("Once upon a time\n")
        return str(tmp_path / "prompts.txt")
    if key == "task.scores":  # a scores file of `model` (validation reads its format and shape)
        import torch
        from omegaconf import OmegaConf

        from optmodel.pruning.scores import FORMAT, SCORES_FILE, shape_of

        shape = shape_of(OmegaConf.to_container(compose_cfg(f"model={model}").model))
        torch.save({"format": FORMAT, "shape": shape, "scores": {}, "meta": {}}, tmp_path / SCORES_FILE)
        return str(tmp_path)
    if key in ("task.data_dir", "task.mmlu.data_dir"):  # the cais/mmlu layout, every subject (validation reads only the listing)
        from optmodel.data.mmlu import SUBJECTS

        for subject in SUBJECTS:
            (tmp_path / "mmlu" / subject).mkdir(parents=True, exist_ok=True)
            for split in ("test", "dev"):
                (tmp_path / "mmlu" / subject / f"{split}-00000-of-00001.parquet").write_bytes(b"")
        return str(tmp_path / "mmlu")
    if key == "task.offline_data":  # an eagle3_features dump of `model`
        shape = compose_cfg(f"model={model}").model
        features = tmp_path / "features"
        features.mkdir(exist_ok=True)
        (features / "features.json").write_text(json.dumps(
            {"complete": True, "target": str(tmp_path), "hidden_size": shape.hidden_size,
             "num_layers": shape.num_layers, "aux_layer_ids": [1, 2, 3]}))
        return str(features)
    raise AssertionError(f"no stand-in for {key}=<{what}>")
