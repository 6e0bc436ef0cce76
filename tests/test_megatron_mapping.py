"""README's table of Megatron-LM modelopt scripts and variables: every script and variable the
examples use has a row, and every row's optmodel command composes and validates at the world
size its layout needs (placeholders `<...>` filled with stand-ins), so the table cannot go stale.
Rows marked CPU validate with backend.device=cpu on a machine without GPU or Transformer-Engine;
rows marked GPU are refused on one."""

from __future__ import annotations

import re
import shlex

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from optmodel.facts.layout import required_world_size
from optmodel.facts.machine import cuda_visible, transformer_engine_installed
from optmodel.checked import resolve_run_config
from optmodel.config.validate import megatron_machine_problems
from optmodel.checked import config_problems
from optmodel.facts.paths import PACKAGE_DIR, conf_dir

from conftest import stand_in

SECTION = "## From Megatron-LM's modelopt scripts"
SCRIPTS = ("quantize.sh", "export.sh", "convert.sh", "prune.sh", "eagle3.sh", "finetune.sh", "mmlu.sh",
           "validate.sh", "generate.sh", "offline_feature_extract.sh")
VARIABLES = ("QFORMAT", "TP", "PP", "EP", "ETP", "CP", "DP", "HF_MODEL_CKPT", "MLM_MODEL_CKPT", "MLM_MODEL_SAVE",
             "EXPORT_DIR", "MLM_EXTRA_ARGS", "MLM_SKIP_INSTALL", "SANDBOX_ENV_SETUP")


def table_rows():
    readme = (PACKAGE_DIR.parent / "README.md").read_text()
    section = readme[readme.index(SECTION):]
    section = section[: section.index("\n## ", 4)]
    lines = [line for line in section.splitlines() if line.startswith("| ")][2:]  # after header and rule
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")] for line in lines]


ROWS = table_rows()


def names(row):
    """The script / variable names a row covers: the first word of each code span in its first cell."""
    return {re.split(r"[ =]", span)[0] for span in re.findall(r"`([^`]+)`", row[0])}


def command(row):
    spans = [s for s in re.findall(r"`([^`]+)`", row[2]) if s.startswith("optmodel")]
    return spans[0] if spans else None


def test_every_script_and_variable_has_a_row():
    covered = set().union(*(names(row) for row in ROWS))
    assert [n for n in SCRIPTS + VARIABLES if n not in covered] == []
    assert all(len(row) == 4 for row in ROWS)
    assert all(command(row) or row[3] == "—" for row in ROWS)  # only a row with nothing to type has no command


def composed(cmd: str, tmp_path):
    words = shlex.split(re.sub(r"<[^>]*>", lambda m: m.group(0).replace(" ", "_"), cmd))  # `<run dir>`: one word
    model = next((w.split("=", 1)[1] for w in words if w.startswith("model=")), "tiny_qwen3")
    overrides = []
    for word in words[1:]:
        key, _, value = word.partition("=")
        if value.startswith("<") and value.endswith(">"):
            value = stand_in(key, tmp_path, model, value[1:-1])
        overrides.append(f"{key}={value}")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)  # hydra.launcher.* checked too
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    typed_model = any(o.startswith(("model=", "experiment=")) for o in overrides)
    return resolve_run_config(cfg, typed_model=typed_model)


@pytest.mark.parametrize("row", [r for r in ROWS if command(r)], ids=lambda r: " ".join(sorted(names(r))))
def test_each_row_s_command_validates_where_it_says_it_runs(row, tmp_path):
    cfg = composed(command(row), tmp_path)
    world = required_world_size(cfg.parallel)
    problems = config_problems(cfg, world_size=world, check_inputs=False)
    assert [p for p in problems if not p.startswith("backend.device: cuda was asked for")] == []
    with open_dict(cfg):
        cfg.backend.device = "cpu"
    on_cpu = config_problems(cfg, world_size=world, check_inputs=False) + megatron_machine_problems(cfg)
    if row[3] == "CPU":
        assert on_cpu == []
    elif row[3] == "GPU" and not (cuda_visible() or transformer_engine_installed()):
        assert on_cpu != []
    else:
        assert row[3] == "GPU", row[3]
