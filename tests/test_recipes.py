"""Every `experiment=` recipe composes and validates, on the world size its header names
(`# world: N`); GPU recipes are checked for everything but the GPU itself on this machine,
and without their checkpoints (check_inputs=False)."""

from __future__ import annotations

import re

import pytest

from optmodel.facts.layout import pipeline_stage_layers
from optmodel.checked import resolve_run_config
from optmodel.checked import config_problems
from optmodel.facts.paths import PACKAGE_DIR, conf_dir

from conftest import compose_cfg, stand_in

RECIPES = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))


def header(name: str, key: str):
    match = re.search(rf"^# {key}: (\S+)", (conf_dir() / "experiment" / f"{name}.yaml").read_text(), re.M)
    return match.group(1) if match else None


def recipe_cfg(name: str, tmp_path):
    keys = [key for key in (header(name, "requires") or "").split(",") if key]
    model = compose_cfg(f"experiment={name}").model.name if keys else None
    extra = [f"{key}={stand_in(key, tmp_path, model)}" for key in keys]
    return resolve_run_config(compose_cfg(f"experiment={name}", *extra), typed_model=True)


@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    """Every recipe composed once (with stand-ins for what it requires), shared by the tests."""
    return {name: recipe_cfg(name, tmp_path_factory.mktemp(name)) for name in RECIPES}


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_composes_and_validates_on_its_world(name, recipes):
    cfg = recipes[name]
    world = int(header(name, "world") or 1)
    assert problems_on(cfg, world) == []
    if world > 1:  # the named world is the one the layout needs, not just one that fits
        assert any("world" in p or "rank" in p for p in problems_on(cfg, world // 2))


def problems_on(cfg, world):
    problems = config_problems(cfg, world_size=world, check_inputs=False)
    return [p for p in problems if not p.startswith("backend.device: cuda was asked for")]


def test_recipes_say_what_they_run(recipes):
    summary = {name: (cfg.model.name, cfg.task.name, cfg.backend.name) for name, cfg in recipes.items()}
    assert summary["llama3_2_1b_nvfp4"] == ("llama3_2_1b_instruct", "quantize", "hf")
    assert summary["kimi_k2_pp16_export"] == ("kimi_k2_instruct", "convert", "megatron")
    assert summary["qwen3_8b_prune_depth24"] == ("qwen3_8b", "prune", "hf")
    assert recipes["llama3_2_1b_auto_quantize"].task.auto_quantize.effective_bits == 4.0
    assert recipes["qwen3_8b_prune_depth24"].task.export_config.num_layers == 24
    assert summary["qwen3_8b_prune_distill"] == ("qwen3_8b", "pipeline", "hf")
    assert summary["llama3_2_1b_nvfp4_pipeline"] == ("llama3_2_1b_instruct", "pipeline", "hf")
    prune_distill = recipes["qwen3_8b_prune_distill"].task
    assert list(prune_distill.steps) == ["prune", "distill"] and prune_distill.prune.export_config.num_layers == 24
    nvfp4 = recipes["llama3_2_1b_nvfp4_pipeline"].task
    assert list(nvfp4.steps) == ["quantize", "mmlu", "export"] and nvfp4.quantize.quant_cfg == "NVFP4_DEFAULT_CFG"
    kimi = recipes["kimi_k2_pp16_export"]
    assert pipeline_stage_layers(kimi.model.num_layers, kimi.parallel) == [3] + [4] * 14 + [2]
    ep = recipes["qwen3_30b_a3b_nvfp4_ep"].parallel
    assert (ep.tensor, ep.expert, ep.expert_tensor) == (1, 8, 1)


def test_eagle3_recipes_train_online_or_from_the_dump_they_are_paired_with(recipes):
    online, dump, offline = (recipes[f"llama3_2_1b_eagle3{suffix}"] for suffix in ("", "_features", "_offline"))
    assert [c.task.name for c in (online, dump, offline)] == ["eagle3", "eagle3_features", "eagle3"]
    assert {c.model.name for c in (online, dump, offline)} == {"llama3_2_1b_instruct"}
    assert online.task.offline_data is None and online.task.al_every > 0
    assert offline.task.offline_data and offline.task.al_every == 0
    assert dump.task.seq_len == offline.task.seq_len  # the draft trains on the rows as dumped
    # eagle3.sh's 128000 training samples
    assert online.task.training.max_steps * online.task.training.global_batch_size == 128000
    assert offline.task.training.max_steps * offline.task.training.global_batch_size == 128000


def test_the_kimi_k2_eagle3_recipe_trains_on_megatron_at_the_example_layout(recipes):
    """Megatron-LM's ADVANCED.md layout: TP 8, ETP 1, EP 64 on 64 GPUs, one draft layer."""
    cfg = recipes["kimi_k2_eagle3"]
    assert (cfg.task.name, cfg.backend.name, cfg.task.draft_layers) == ("eagle3", "megatron", 1)
    assert (cfg.parallel.tensor, cfg.parallel.expert_tensor, cfg.parallel.expert, cfg.parallel.pipeline) == (8, 1, 64, 1)


def readme_recipe_rows():
    readme = (PACKAGE_DIR.parent / "README.md").read_text()
    section = readme[readme.index("### Recipes"):]
    section = section[: section.index("\n#", 4)]
    rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in section.splitlines()
            if line.startswith("| `")]
    return {row[0].strip("`"): row for row in rows}


def test_the_readme_recipe_table_says_what_each_recipe_composes_to(recipes):
    table = readme_recipe_rows()
    assert sorted(table) == RECIPES
    for name, (_, model, task, backend, world) in table.items():
        cfg = recipes[name]
        said = (model, task.split()[0].rstrip(":"), backend.split(",")[0], int(re.match(r"\d+", world).group()))
        assert said == (cfg.model.name, cfg.task.name, cfg.backend.name, int(header(name, "world") or 1)), name
        layout = backend.split(",", 1)[1]  # "single", "`pp16_kimi` (...)" or "TP 1 EP 8 ETP 1"
        sizes = dict(re.findall(r"\b(TP|PP|EP|ETP|CP) (\d+)", layout))
        par = cfg.parallel
        actual = {"TP": par.tensor, "PP": par.pipeline, "EP": par.expert, "CP": par.context,
                  "ETP": par.tensor if par.expert_tensor is None else par.expert_tensor}
        if sizes:
            assert {k: int(v) for k, v in sizes.items()} == {k: actual[k] for k in sizes}, name
        else:
            assert layout.split()[0].strip("`") == par.name, name
