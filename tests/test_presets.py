"""`preset=`: gpu (the tasks' own defaults) and laptop (sized for 2 CPU cores). What a preset
changes for a task lives in conf/preset_task/<preset>_<task>.yaml, for a data config in
conf/preset_data/<preset>_<data>.yaml; composing only (no run)."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from optmodel.checked import config_problems
from optmodel.facts.paths import ASSETS_DIR, TINY_MODELS_DIR, conf_dir

from conftest import compose_cfg

PRESETS = sorted(p.stem for p in (conf_dir() / "preset").glob("*.yaml"))
GROUPS = {"task": "preset_task", "data": "preset_data"}  # group -> where a preset's changes to its options live
OPTIONS = {g: sorted(p.stem for p in (conf_dir() / g).glob("*.yaml")) for g in GROUPS}
PER_OPTION = [(g, p) for g, d in GROUPS.items() for p in sorted((conf_dir() / d).glob("*.yaml"))]
# what a plain task=<task> leaves to the user
NEEDS = {"distill": [f"task.teacher={TINY_MODELS_DIR / 'tiny_qwen3'}"],
         "pipeline": ["task.steps=[prune,distill]", "task.prune.export_config.num_layers=3", "task.prune.save_model=false"],
         "text": [f"data.calib_path={ASSETS_DIR / 'speculative' / 'conversations.jsonl'}",
                  f"data.eval_path={ASSETS_DIR / 'corpus' / 'heldout.txt'}"]}


def leaves(node, prefix=""):
    """{'task.training.max_steps': 40, ...} of a nested mapping."""
    out = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        out.update(leaves(value, path + ".") if isinstance(value, dict) else {path: value})
    return out


def test_presets_are_gpu_by_default_and_laptop():
    assert PRESETS == ["gpu", "laptop"]
    assert OmegaConf.to_container(compose_cfg("task=distill").task) == \
        OmegaConf.to_container(compose_cfg("task=distill", "preset=gpu").task)


@pytest.mark.parametrize("group,path", PER_OPTION, ids=lambda p: getattr(p, "stem", p))
def test_each_preset_file_applies_to_its_option_and_validates(group, path):
    """A file whose name matches no <preset>_<option> pair would never apply: the name is
    checked, then every value it sets is what `<group>=<option> preset=<preset>` composes to,
    and differs from the gpu preset's."""
    preset, option = path.stem.split("_", 1)
    assert preset in PRESETS and option in OPTIONS[group], f"{path.name}: <preset>_<{group}>.yaml"
    overrides = [f"{group}={option}", *NEEDS.get(option, [])]
    cfg = compose_cfg(*overrides, f"preset={preset}")
    assert config_problems(cfg, world_size=1) == []
    gpu = compose_cfg(*overrides)
    for key, value in leaves(yaml.safe_load(path.read_text())).items():
        assert OmegaConf.select(cfg, key) == value != OmegaConf.select(gpu, key), key


def test_command_line_beats_the_preset():
    cfg = compose_cfg("task=finetune", "preset=laptop", "task.training.max_steps=7")
    assert cfg.task.training.max_steps == 7 and cfg.task.training.global_batch_size == 8


def test_laptop_preset_leaves_tasks_it_does_not_size_alone():
    assert compose_cfg("preset=laptop") == compose_cfg()
