"""Shared fixtures: compose configs through Hydra's compose API, no app run."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

from optmodel.config.schema import register_schemas
from optmodel.tasks.registry import task_specs
from optmodel.facts.paths import conf_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers share the cores: one torch thread each (and in every run they start),
    # or their intra-op threads only spin against each other on tiny models.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

register_schemas(task_specs())


def compose_cfg(*overrides: str):
    """The run config `optmodel <overrides>` would get."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# Test files that take longest, longest first: with `-n N` they start first, so the cheap
# files fill the other workers instead of waiting behind one of them at the end.
COSTLIEST_FILES = (
    "test_library_sets.py",  # cheap in the pinned suite; with the other set (CI's current-set run) ~50 s
    "test_launchers.py", "test_faults.py", "test_slurm_cluster.py", "test_eagle3_megatron.py", "test_qad.py",
    "test_distill_megatron.py", "test_training.py", "test_megatron_generate_export.py", "test_compare.py",
    "test_eval_mmlu.py", "test_prune_megatron.py", "test_megatron_torchrun.py", "test_quantize_run.py",
    "test_megatron_parallel.py", "test_eval_tasks.py", "test_distill_pair.py", "test_quantize_formats.py",
    "test_quantize_workflow.py", "test_pipeline.py", "test_auto_model.py", "test_megatron_backend.py",
    "test_distill_task.py", "test_config_validation.py", "test_seed_models_hf.py", "test_prune.py", "test_eagle3.py",
)  # measured: each file's summed `--durations=0` times under `-n 3` on 2 cores


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`-n N` (pytest-xdist): whole test files per worker, so a module's fixtures (a quantized
    model, a finished run, a Slurm cluster) are built once and its process group stays in one
    process; the costliest files first. An explicit `--dist` other than load keeps its own."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadFileScheduling

    class CostliestFileFirst(LoadFileScheduling):
        def schedule(self):
            self.config.option.loadscopereorder = False  # keep the collection's order, set below
            super().schedule()

        def _reschedule(self, node):
            # The next file only once this worker is on its last test: a file queued behind a
            # long test would wait while another worker idles.
            if not node.shutting_down and self.workqueue and self._pending_of(self.assigned_work[node]) > 1:
                return
            super()._reschedule(node)

    return CostliestFileFirst(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker orders alike (xdist checks that)
        rank = {name: i for i, name in enumerate(COSTLIEST_FILES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as collected
    skip_gpu_tests_without_a_gpu(items)


def skip_gpu_tests_without_a_gpu(items):
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
        from optmodel.backends.megatron_world import destroy_model_parallel

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
