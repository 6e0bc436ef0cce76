"""The README's options reference is what `python -m optmodel.reference` generates from
the schemas and conf/, and it lists every field a composed run config has, with its default."""

from __future__ import annotations

import re

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from optmodel import reference
from optmodel.tasks.registry import task_specs
from optmodel.facts.paths import PACKAGE_DIR, conf_dir

from conftest import compose_cfg

FIX = "python -m optmodel.reference"


def leaves(node, prefix):
    """option -> value of every leaf of a composed config section (nested sections flattened)."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        elif key != "name" or prefix.count(".") > 1:
            out[f"{prefix}{key}"] = value
    return out


def test_readme_holds_the_generated_reference():
    readme = (PACKAGE_DIR.parent / "README.md").read_text()
    assert readme == reference.with_reference(readme), f"README.md's options reference is stale. Fix: {FIX}"


@pytest.fixture(scope="module")
def tables():
    return {heading.split("`")[1].split("=")[-1] if heading.startswith("`task=") else heading.split("`")[1]:
            {name: (default, what) for name, default, what in rows} for heading, rows in reference.tables()}


def test_every_group_table_lists_the_default_run_s_fields_and_values(tables):
    cfg = OmegaConf.to_container(compose_cfg(), resolve=False)
    for group in ("model", "parallel", "backend", "data", "logger", "run"):
        listed = tables[group]
        composed = {n: v for n, v in leaves(cfg[group], f"{group}.").items()  # an unset section (moe: null) is its rows
                    if not (v is None and any(o.startswith(f"{n}.") for o in listed))}
        assert set(composed) <= set(listed), group
        # listed beyond the run's: only the fields of sections the default model leaves unset (moe, mla)
        assert {n.split(".")[1] for n in set(listed) - set(composed)} <= {"moe", "mla"}, group
        assert {n: listed[n][0] for n in composed} == {n: reference._default_text(v) for n, v in composed.items()}


@pytest.mark.parametrize("preset", sorted(p.stem for p in (conf_dir() / "hydra" / "launcher").glob("*.yaml")))
def test_every_launcher_table_lists_the_composed_preset(tables, preset):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={preset}"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    composed = {f"hydra.launcher.{k}": reference._default_text(v) for k, v in launcher.items() if k != "_target_"}
    assert {n: d for n, (d, _) in tables[f"hydra/launcher={preset}"].items()} == composed


@pytest.mark.parametrize("task", sorted(task_specs()))
def test_every_task_table_lists_the_composed_task_s_fields_and_defaults(tables, task):
    composed = leaves(OmegaConf.to_container(compose_cfg(f"task={task}").task, resolve=False), "task.")
    listed = tables[task]
    assert sorted(listed) == sorted(composed)
    assert {n: listed[n][0] for n in composed} == {n: reference._default_text(v) for n, v in composed.items()}


def test_help_is_the_field_s_line_comment_and_cells_stay_one_cell(tables):
    source = (PACKAGE_DIR / "tasks" / "quantize" / "spec.py").read_text()
    comment = re.search(r"^    quant_cfg: .*?#\s*(.+)$", source, re.M).group(1).strip()
    assert tables["quantize"]["task.quant_cfg"][1] == comment
    markdown = reference.reference_markdown()
    assert "| `task.direction` | `hf_to_megatron` | hf_to_megatron \\| megatron_to_hf |" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert rows and all(len(re.split(r"(?<!\\)\|", row)) == 5 for row in rows)  # 3 cells: no stray "|"


def test_check_fails_on_a_stale_readme_and_names_the_command(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{reference.BEGIN}\n| `task.gone` | `1` | removed |\n{reference.END}\n")
    monkeypatch.setattr(reference, "readme_path", lambda: stale)
    assert reference.main(["--check"]) == 1
    assert FIX in capsys.readouterr().err
    assert reference.main([]) == 0 and reference.main(["--check"]) == 0
    assert "task.gone" not in stale.read_text() and "`task.quant_cfg`" in stale.read_text()
