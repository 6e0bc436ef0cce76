"""The package's import graph, read from the source with `ast` (nothing is imported):

- optmodel/facts/ (plain facts) imports nothing else of optmodel and no heavy library;
- optmodel/config/ imports only the facts (and itself), never a heavy library at import;
- no import cycle, imports inside functions counted, module by module (importing `a.b.c`
  also runs the packages `a` and `a.b`);
- an optmodel module is imported inside a function only where a heavy library would otherwise
  load at import; a task's own modules are loaded only by the task registry;
- nothing outside optmodel/tasks/ names a task (imports a task package, or compares a task
  name against a literal one);
- the README's package map lists the packages of the tree.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "optmodel"
LEAF = "optmodel.facts"
REGISTRY = "optmodel.tasks.registry"
# Third-party libraries light enough for validation and `--cfg job` (no torch behind them).
LIGHT = {"omegaconf", "yaml", "hydra"}
TASKS = sorted(p.parent.name for p in (PACKAGE / "tasks").glob("*/spec.py"))


def modules(root: Path = PACKAGE) -> Dict[str, Path]:
    return {module_name_under(p, root): p for p in sorted(root.rglob("*.py"))}


def module_name_under(path: Path, root: Path) -> str:
    parts = (root.name,) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class Import:
    """One import statement: the modules it names, whether it sits in a function."""

    def __init__(self, names: List[str], local: bool, line: int):
        self.names, self.local, self.line = names, local, line


def imports_of(path: Path, name: str) -> List[Import]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: List[Import] = []

    def walk(node, local: bool):
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.append(Import([a.name for a in child.names], local, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + ([base] if base else []))
                found.append(Import([base] + [f"{base}.{a.name}" for a in child.names], local, child.lineno))
            walk(child, inner)

    walk(tree, False)
    return found


def resolve(target: str, known) -> str:
    """The module a dotted name lands in (`optmodel.facts.errors.ConfigError` -> `optmodel.facts.errors`)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target


def ancestors(name: str) -> List[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@lru_cache(maxsize=None)
def graph_of(root: Path = PACKAGE) -> Tuple[Dict[str, Set[str]], Dict[str, List[Tuple[str, bool, int]]]]:
    """(edges: module -> modules its import runs, in-package imports: module -> [(target, local, line)])."""
    known = modules(root)
    edges: Dict[str, Set[str]] = {m: set() for m in known}
    found: Dict[str, List[Tuple[str, bool, int]]] = {m: [] for m in known}
    prefix = root.name + "."
    for name, path in known.items():
        own = set(ancestors(name))  # already imported before this module runs
        for imp in imports_of(path, name):
            targets = {resolve(n, known) for n in imp.names if n == root.name or n.startswith(prefix)} - {"", name}
            for target in targets:
                found[name].append((target, imp.local, imp.line))
                edges[name].update({target} | (set(ancestors(target)) - own) - {name})  # an explicit import of an own package counts
    return edges, found


def third_party_at_import(path: Path, name: str) -> Set[str]:
    """Top-level names of the non-stdlib, non-optmodel libraries imported at module level."""
    tops = {n.split(".")[0] for imp in imports_of(path, name) if not imp.local for n in imp.names[:1] if n}
    return {t for t in tops if t not in sys.stdlib_module_names and t not in ("optmodel", "__future__")}


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def task_naming(path: Path) -> List[str]:
    """Where `path` names a task: a comparison of something task-ish with a task-name literal,
    or a table keyed by task names (string dispatch)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Compare, ast.Call)):  # task.name == "prune", task.startswith("pipeline/")
            literals = {c.value.rstrip("/") for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
            text = ast.unparse(node)
            if "task" in text and literals & set(TASKS) and (isinstance(node, ast.Compare) or len(text) < 120):
                found.append(f"{path.name}:{node.lineno}: {text}")
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and k.value in TASKS]
            if len(keys) > 1:
                found.append(f"{path.name}:{node.lineno}: a table keyed by tasks {keys}")
    return found


EDGES, FOUND = graph_of()


def test_the_leaf_imports_nothing_of_optmodel_and_nothing_heavy():
    outside = {m: sorted(t for t in deps if not t.startswith(LEAF)) for m, deps in EDGES.items() if m.startswith(LEAF)}
    assert {m: d for m, d in outside.items() if d} == {}
    heavy = {m: third_party_at_import(p, m) - LIGHT for m, p in modules().items() if m.startswith(LEAF)}
    assert {m: h for m, h in heavy.items() if h} == {}


def test_config_imports_only_the_leaf_and_nothing_heavy():
    outside = {m: sorted(t for t in deps if not t.startswith((LEAF, "optmodel.config")) and t != "optmodel")
               for m, deps in EDGES.items() if m.startswith("optmodel.config")}
    assert {m: d for m, d in outside.items() if d} == {}
    heavy = {m: third_party_at_import(p, m) - LIGHT for m, p in modules().items() if m.startswith("optmodel.config")}
    assert {m: h for m, h in heavy.items() if h} == {}


def test_no_import_cycle_function_local_imports_counted():
    assert cycles(EDGES) == []


def test_only_the_registry_loads_a_task_s_modules():
    """A task's spec and runner are loaded by the registry (importlib, by the task's name);
    other tasks' packages may use each other's specs (task=pipeline's steps)."""
    task_modules = tuple(f"optmodel.tasks.{t}" for t in TASKS)
    users = sorted(f"{m} -> {t}" for m, found in FOUND.items() for t, _, _ in found
                   if t.startswith(task_modules) and not m.startswith(task_modules))
    assert users == []


def test_nothing_outside_the_task_packages_names_a_task():
    outside = [p for m, p in modules().items() if not m.startswith("optmodel.tasks")]
    assert [hit for p in outside for hit in task_naming(p)] == []


def test_an_optmodel_module_is_imported_inside_a_function_only_to_keep_a_heavy_library_out():
    """Where an optmodel import sits in a function, the module it names must load a heavy
    library at import (directly or through its own module-level imports); else it belongs at
    the top of the file."""
    known = modules()
    top_edges = {m: set() for m in known}
    for m, found in FOUND.items():
        for target, local, _ in found:
            if not local:
                top_edges[m].update({target, *ancestors(target)} - set(ancestors(m)) - {m})

    @lru_cache(maxsize=None)
    def heavy(m: str, seen: frozenset = frozenset()) -> bool:
        if third_party_at_import(known[m], m) - LIGHT:
            return True
        return any(heavy(t, seen | {m}) for t in top_edges[m] if t not in seen and t != m)

    statements: Dict[Tuple[str, int], List[str]] = {}  # (module, line) -> the modules one local import names
    for m, found in FOUND.items():
        for target, local, line in found:
            if local and m != REGISTRY:
                statements.setdefault((m, line), []).append(target)
    needless = sorted(f"{m}:{line} {targets}" for (m, line), targets in statements.items()
                      if not any(heavy(t) for t in targets))
    assert needless == []


def test_no_runtime_module_imports_the_tiny_model_builder():
    users = [m for m, deps in EDGES.items() if not m.startswith("optmodel.tinybuild")
             and any(d.startswith("optmodel.tinybuild") for d in deps)]
    assert users == []


def backend_comparisons(path: Path) -> List[str]:
    """Comparisons in `path` that test a backend: `x.backend... == ...`, or against "megatron"."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            text = ast.unparse(node)
            if "backend" in text or re.search(r"['\"]megatron['\"]", text):
                found.append(f"{path.name}:{node.lineno}: {text}")
    return found


def test_task_runners_never_compare_the_backend_name():
    """A runner asks its model handle; what a backend cannot do its spec refuses at validation.
    Runner side: a task package's modules that no spec module imports."""
    known = modules()
    checks = {t for m, found in FOUND.items() if m.endswith(".spec") for t, _, _ in found} | \
        {m for m in known if m.endswith(".spec")}
    runner_side = [p for m, p in known.items() if m.startswith(tuple(f"optmodel.tasks.{t}." for t in TASKS))
                   and m not in checks]
    assert [c for p in runner_side for c in backend_comparisons(p)] == []


# --- the test bites: a probe package with each fault, read the same way ---

def _probe(tmp_path: Path, files: Dict[str, str]) -> Path:
    root = tmp_path / "optmodel"
    for rel, text in {"__init__.py": "", "facts/__init__.py": "", "config/__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_graph_sees_a_function_local_cycle_and_a_leaf_import(tmp_path):
    root = _probe(tmp_path, {
        "facts/errors.py": "from optmodel.config import schema\n",
        "config/schema.py": "def f():\n    from optmodel.facts.errors import X\n",
    })
    edges, found = graph_of(root)
    assert cycles(edges) == [["optmodel.config.schema", "optmodel.facts.errors"]]
    assert ("optmodel.facts.errors", True, 2) in found["optmodel.config.schema"]


def test_the_graph_counts_the_packages_an_import_runs(tmp_path):
    root = _probe(tmp_path, {"config/__init__.py": "from optmodel.config.schema import A\n",
                             "config/schema.py": "A = 1\n", "data/__init__.py": "", "data/text.py": "import optmodel.config.schema\n",
                             "facts/dtype.py": "from optmodel.data.text import B\n"})
    edges, _ = graph_of(root)
    assert {"optmodel.config", "optmodel.config.schema"} <= edges["optmodel.data.text"]
    assert edges["optmodel.facts.dtype"] >= {"optmodel.data", "optmodel.data.text"}


def test_a_backend_comparison_is_seen(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f(cfg, handle):\n    return cfg.backend.name == 'megatron' or handle.backend != 'hf'\n")
    assert len(backend_comparisons(probe)) == 2


def test_task_naming_is_seen(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("AXES = {'quantize': 1, 'prune': 2}\n"
                     "def f(cfg, task):\n    return cfg.task.name == 'pipeline' or task in ('finetune', 'distill')\n"
                     "def g(row):\n    return row['task'].startswith('pipeline/')\n")
    assert len(task_naming(probe)) == 4


def test_the_readme_architecture_map_lists_every_package():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Architecture"):]
    section = section[: section.index("\n## ", 4)]
    packages = sorted(p.parent.relative_to(PACKAGE).as_posix() for p in PACKAGE.glob("*/__init__.py"))
    assert [p for p in packages if f"{p}/" not in section] == []
    assert "tasks/<name>/" in section and "registry" in section


@pytest.mark.parametrize("package", sorted({m for m in modules() if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").is_file()}))
def test_every_package_ships(package):
    """pyproject.toml lists every package (a task's package too), or the wheel lacks it."""
    import tomllib

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert package in listed
