"""The code's shape: small modules, each task in its package, a README layout that matches
the tree (the import graph's rules: tests/test_import_graph.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "optmodel"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


def test_every_task_is_its_package_and_its_conf_yaml():
    """conf/task/<name>.yaml, optmodel/tasks/<name>/spec.py (SPEC) and optmodel/tasks/<name>/run.py (run)."""
    from optmodel.tasks.registry import task_runner, task_specs

    for name, spec in task_specs().items():
        assert spec.name == name and (PACKAGE / "tasks" / name / "spec.py").is_file(), name
        assert (PACKAGE / "tasks" / name / "run.py").is_file() and callable(task_runner(name)), name
        yaml = (ROOT / "conf" / "task" / f"{name}.yaml").read_text()
        assert [line for line in yaml.splitlines() if line and not line.startswith(("#", " ", "defaults"))] == [], \
            f"conf/task/{name}.yaml restates schema defaults"


def test_readme_layout_names_every_package_and_task():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Layout"):]
    section = section[: section.index("\n## ", 4)] if "\n## " in section[4:] else section
    packages = sorted(p.parent.relative_to(ROOT).as_posix() + "/" for p in PACKAGE.glob("*/__init__.py"))
    missing = [p for p in packages if p not in section]
    assert missing == []
    adding = readme[readme.index("## Adding a task"):]
    for needle in ("conf/task/", "optmodel/tasks/<name>/spec.py", "optmodel/tasks/<name>/run.py"):
        assert needle in adding.split("\n## ")[0]
