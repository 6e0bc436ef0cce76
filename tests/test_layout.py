"""The code's shape: no import cycles, a leaf config package, tasks that never ask which
backend they run on, small modules, a README layout that matches the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "optmodel"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path):
    """optmodel modules `path` imports anywhere (module level and inside functions)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    known = {module_name(p) for p in MODULES}
    return {n for n in names if n in known and n.startswith("optmodel")}


GRAPH = {module_name(p): imported(p) for p in MODULES}


def test_no_import_cycle_inside_optmodel():
    """Depth-first search over every import edge; a module reached again on its own path is a cycle."""
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt == node or (node.startswith(nxt + ".") and nxt in GRAPH):  # a package's own submodule import
                continue
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_config_package_imports_no_task_backend_evaluation_or_quantization_code():
    bad = {m: sorted(i for i in deps if i.startswith(("optmodel.tasks", "optmodel.backends", "optmodel.evaluation",
                                                         "optmodel.quantization")))
           for m, deps in GRAPH.items() if m.startswith("optmodel.config")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_no_runtime_module_imports_the_tiny_model_builder():
    users = [m for m, deps in GRAPH.items() if not m.startswith("optmodel.tinybuild")
             and any(d.startswith("optmodel.tinybuild") for d in deps)]
    assert users == []


def _backend_comparisons(path: Path):
    """Comparisons in `path` that test a backend: `x.backend... == ...`, or against "megatron"."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            text = ast.unparse(node)
            if "backend" in text or re.search(r"['\"]megatron['\"]", text):
                found.append(f"{path.name}:{node.lineno}: {text}")
    return found


def test_tasks_never_compare_the_backend_name():
    """A task's runner asks its model handle; what a backend cannot do is refused by the spec."""
    found = [c for p in sorted((PACKAGE / "tasks").rglob("*.py")) if p.name != "spec.py" for c in _backend_comparisons(p)]
    assert found == []


def test_the_backend_check_sees_a_backend_comparison(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f(cfg, handle):\n    return cfg.backend.name == 'megatron' or handle.backend != 'hf'\n")
    assert len(_backend_comparisons(probe)) == 2


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


def test_every_task_is_registered_by_three_files():
    """conf/task/<name>.yaml, optmodel/config/tasks/<name>.py and optmodel/tasks/<name>.py."""
    from optmodel.tasks.registry import task_specs

    for name, spec in task_specs().items():
        assert (ROOT / "conf" / "task" / f"{name}.yaml").is_file(), name
        assert (PACKAGE / "config" / "tasks" / f"{name}.py").is_file(), name
        assert spec.runner == f"optmodel.tasks.{name}" and (PACKAGE / "tasks" / f"{name}.py").is_file(), name
        yaml = (ROOT / "conf" / "task" / f"{name}.yaml").read_text()
        assert [line for line in yaml.splitlines() if line and not line.startswith(("#", " ", "defaults"))] == [], \
            f"conf/task/{name}.yaml restates schema defaults"


def test_readme_layout_names_every_package_and_task():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Layout"):]
    section = section[: section.index("\n## ", 4)] if "\n## " in section[4:] else section
    packages = sorted(p.parent.relative_to(ROOT).as_posix() + "/" for p in PACKAGE.glob("*/__init__.py"))
    packages += sorted(p.relative_to(ROOT).as_posix() + "/" for p in (PACKAGE / "config").glob("*/") if (p / "__init__.py").is_file())
    missing = [p for p in packages if p not in section]
    assert missing == []
    adding = readme[readme.index("## Adding a task"):]
    for needle in ("conf/task/", "optmodel/config/tasks/", "optmodel/tasks/"):
        assert needle in adding.split("\n## ")[0]
