"""Every `experiment=` recipe composes and validates, on the world size its header names
(`# world: N`); GPU recipes are checked for everything but the GPU itself on this machine,
and without their checkpoints (check_inputs=False)."""

from __future__ import annotations

import re

import pytest

from optmodel.config.layout import pipeline_stage_layers
from optmodel.config.resolve import resolve_run_config
from optmodel.config.validate import config_problems
from optmodel.paths import conf_dir

from conftest import compose_cfg

RECIPES = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))


def header(name: str, key: str):
    match = re.search(rf"^# {key}: (\S+)", (conf_dir() / "experiment" / f"{name}.yaml").read_text(), re.M)
    return match.group(1) if match else None


def required_inputs(name: str, tmp_path):
    """Overrides standing in for what the recipe's `# requires:` header says the user passes."""
    needs = header(name, "requires")
    if needs == "run.load":
        return [f"run.load={tmp_path}"]
    if needs == "task.mmlu.data_dir":  # the cais/mmlu `all` layout (validation reads only the file listing)
        (tmp_path / "mmlu" / "all").mkdir(parents=True, exist_ok=True)
        for split in ("test", "dev"):
            (tmp_path / "mmlu" / "all" / f"{split}-00000-of-00001.parquet").touch()
        return [f"task.mmlu.data_dir={tmp_path / 'mmlu'}"]
    return []


def recipe_cfg(name: str, tmp_path):
    extra = required_inputs(name, tmp_path)
    return resolve_run_config(compose_cfg(f"experiment={name}", *extra), typed_model=True, typed_backend=True)


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_composes_and_validates_on_its_world(name, tmp_path):
    cfg = recipe_cfg(name, tmp_path)
    world = int(header(name, "world") or 1)
    assert problems_on(cfg, world) == []
    if world > 1:  # the named world is the one the layout needs, not just one that fits
        assert any("world" in p or "rank" in p for p in problems_on(cfg, world // 2))


def problems_on(cfg, world):
    problems = config_problems(cfg, world_size=world, check_inputs=False)
    return [p for p in problems if not p.startswith("backend.device: cuda was asked for")]


def test_recipes_say_what_they_run(tmp_path):
    summary = {}
    for name in RECIPES:
        cfg = recipe_cfg(name, tmp_path)
        summary[name] = (cfg.model.name, cfg.task.name, cfg.backend.name)
    assert summary["llama3_2_1b_nvfp4"] == ("llama3_2_1b_instruct", "quantize", "hf")
    assert summary["kimi_k2_pp16_export"] == ("kimi_k2_instruct", "convert", "megatron")
    assert summary["qwen3_8b_prune_depth24"] == ("qwen3_8b", "prune", "hf")
    assert summary["qwen3_8b_prune_distill"] == ("qwen3_8b", "pipeline", "hf")
    assert summary["llama3_2_1b_nvfp4_pipeline"] == ("llama3_2_1b_instruct", "pipeline", "hf")
    prune_distill = recipe_cfg("qwen3_8b_prune_distill", tmp_path).task
    assert list(prune_distill.steps) == ["prune", "distill"] and prune_distill.prune.export_config.num_layers == 24
    nvfp4 = recipe_cfg("llama3_2_1b_nvfp4_pipeline", tmp_path).task
    assert list(nvfp4.steps) == ["quantize", "mmlu", "export"] and nvfp4.quantize.quant_cfg == "NVFP4_DEFAULT_CFG"
    assert compose_cfg("experiment=llama3_2_1b_auto_quantize").task.auto_quantize.effective_bits == 4.0
    assert compose_cfg("experiment=qwen3_8b_prune_depth24").task.export_config.num_layers == 24
    kimi = recipe_cfg("kimi_k2_pp16_export", tmp_path)
    assert pipeline_stage_layers(kimi.model.num_layers, kimi.parallel) == [3] + [4] * 14 + [2]
    ep = compose_cfg("experiment=qwen3_30b_a3b_nvfp4_ep").parallel
    assert (ep.tensor, ep.expert, ep.expert_tensor) == (1, 8, 1)
