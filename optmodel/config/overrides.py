"""Command-line overrides checked against the schemas before Hydra composes anything.

Hydra answers a misspelt key (`parallel.ep=2`) with "Could not override ... To append to
your config use +parallel.ep=2": no word of the real field, and a hint that adds a key
nothing reads (the setting is then silently ignored, as any `+unknown=1` is). Here every
`key=value` and `+key=value` is looked up in the run config's schema (the task's own for
task.*); an unknown key is one message with the closest real fields, exit 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from optmodel.config.chosen import default_choice
from optmodel.config.schema import OptmodelConfig
from optmodel.facts.errors import one_of
from optmodel.facts.paths import conf_dir

# Names users bring from Megatron-LM flags and the shell scripts' variables.
ALIASES = {
    "parallel.tp": "parallel.tensor", "parallel.pp": "parallel.pipeline", "parallel.ep": "parallel.expert",
    "parallel.etp": "parallel.expert_tensor", "parallel.cp": "parallel.context", "parallel.dp": "parallel.data",
    "parallel.tensor_parallel": "parallel.tensor", "parallel.pipeline_parallel": "parallel.pipeline",
    "data.calib_size": "data.num_samples", "data.calib_samples": "data.num_samples",
    "data.calib_batch_size": "data.batch_size", "data.max_seq_len": "data.seq_len", "data.seq_length": "data.seq_len",
    "task.qformat": "task.quant_cfg", "task.quant_format": "task.quant_cfg", "task.format": "task.quant_cfg",
    "model.num_hidden_layers": "model.num_layers", "model.intermediate_size": "model.ffn_hidden_size",
    "model.num_key_value_heads": "model.num_query_groups", "model.head_dim": "model.kv_channels",
}
GROUPS = ("model", "parallel", "task", "backend", "data", "logger", "experiment", "preset")


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap(tp):
    """Optional[X] -> X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def schema_paths(schema, prefix: str = "") -> Dict[str, Any]:
    """Every field path of a dataclass schema -> its type (nested dataclasses walked)."""
    hints = typing.get_type_hints(schema)
    paths: Dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        tp = _unwrap(hints[f.name])
        path = f"{prefix}{f.name}"
        paths[path] = tp
        if _is_dataclass_type(tp):
            paths.update(schema_paths(tp, path + "."))
    return paths


def _known_paths(task_names: Sequence[str], specs: Mapping[str, Any]) -> Dict[str, Any]:
    paths = {p: t for p, t in schema_paths(OptmodelConfig).items() if not p.startswith("task")}
    for name in task_names:
        if name in specs:
            paths.update(schema_paths(specs[name].schema, "task."))
    return paths


def _free_form(path: str, known: Dict[str, Any]) -> bool:
    """Below a Dict / Any field (model.rope_scaling.factor, experiment.*): any key is fine."""
    parts = path.split(".")
    for i in range(1, len(parts)):
        tp = known.get(".".join(parts[:i]))
        if tp is Any or typing.get_origin(tp) in (dict, typing.Dict) or tp is dict:
            return True
    return False


def _task_paths(overrides: Sequence[str], specs: Mapping[str, Any]):
    """Every known field path -> type (the chosen task's, or every task's under an experiment)."""
    task = _chosen(overrides, "task", default_choice("task"))
    tasks: List[str] = task.split(",")
    if _chosen(overrides, "experiment", ""):
        tasks = list(specs)  # an experiment may pick any task
    return _known_paths(tasks, specs), task


def _chosen(overrides: Sequence[str], group: str, default: str) -> str:
    for o in overrides:
        if o.startswith(f"{group}="):
            return o.split("=", 1)[1]
    return default


def override_problems(argv: Sequence[str], specs: Mapping[str, Any]) -> List[str]:
    """Problems of the `key=value` overrides in `argv`: what Hydra's grammar cannot parse,
    unknown fields, unknown group options and values of the wrong type (Hydra answers the
    last two with exit 1 and its own report). specs: every task's spec, by name (the registry's)."""
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    parsed, problems = _parse(overrides)
    if problems:
        return problems
    known, task = _task_paths(overrides, specs)
    for item in overrides:
        key = item.split("=", 1)[0]
        plus = key.startswith("+")
        key = key.lstrip("+~")
        if item.lstrip("+~").startswith("hydra") or item.startswith("~") or key in GROUPS or "/" in key:
            continue
        if key in known or _free_form(key, known):
            continue
        problems.append(_renamed(key, item.split("=", 1)[1], specs.get(task)) or _unknown(key, plus, known, task))
    dirs = [conf_dir(), *user_config_dirs(argv)]
    problems += [p for o in parsed for p in _value_problems(o, known, dirs)]
    if problems or len(dirs) == 1:
        return problems
    # the user's own config files: what Hydra would refuse in them, in the same terms as on the command line
    return composition_problems([o for o in overrides if not o.lstrip("+~").startswith("hydra.")], dirs[1:], specs)


def composition_problems(overrides: Sequence[str], dirs: Sequence[Path], specs: Mapping[str, Any]) -> List[str]:
    """Compose the run config with the user's config `dirs` on the search path; a key or value
    Hydra refuses in one of their files is one problem naming the field, the file and the fix
    (a renamed task option names its new field). Needs the schemas registered (the cli does)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    searchpath = "hydra.searchpath=[" + ",".join(f"file://{Path(d).resolve()}" for d in dirs) + "]"
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            compose("config", overrides=[*overrides, searchpath])
    except ConfigCompositionException as err:
        text = str(err)  # "In '<file>': <Error> raised ...\n<reason>\n    full_key: <key>\n ..."
        lines = text.splitlines()
        where = re.search(r"In '([^']+)'", text)
        key = re.search(r"full_key: (\S+)", text)
        source = f" (set in {where.group(1)}.yaml)" if where else ""
        if key and len(lines) > 1 and lines[1].startswith("Key "):  # an unknown key, not a wrong value
            task = (_task_in_file(where.group(1), dirs) if where else None) or _chosen(overrides, "task", default_choice("task"))
            problem = (_renamed(key.group(1), "<value>", specs.get(task))
                       or _unknown(key.group(1), False, _known_paths([task], specs), task))
            return [problem.replace(": ", f"{source}: ", 1)]
        reason = next((line for line in lines[1:] if line.strip()), text).strip()
        return [f"{key.group(1) if key else 'config'}{source}: {reason}. Fix: correct that file."]
    return []


def _task_in_file(name: str, dirs: Sequence[Path]) -> Optional[str]:
    """The task a config file (`experiment/my_recipe`) picks in its defaults list, if any."""
    for d in [*dirs, conf_dir()]:
        path = Path(d) / f"{name}.yaml"
        if path.is_file():
            defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
            return next((str(v) for entry in defaults if isinstance(entry, dict)
                         for k, v in entry.items() if k.replace("override", "").strip(" /") == "task"), None)
    return None


def user_config_dirs(argv: Sequence[str]) -> List[Path]:
    """Config dirs a user adds beside conf/ (their own experiment / model files), as Hydra takes
    them: `--config-dir DIR` (`-cd DIR`) and `hydra.searchpath=[file://DIR,...]`."""
    dirs: List[str] = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(argv[i + 1])
        elif arg.startswith("--config-dir="):
            dirs.append(arg.split("=", 1)[1])
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            listed = arg.split("=", 1)[1].strip("[]")
            dirs += [d.strip().strip("'\"") for d in listed.split(",") if d.strip()]
    # pkg:// entries name installed packages: not checked here (Hydra reports those itself)
    return [Path(d[len("file://"):] if d.startswith("file://") else d) for d in dirs if "://" not in d or d.startswith("file://")]


def _parse(overrides: Sequence[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser, parsed, problems = OverridesParser.create(), [], []
    for item in overrides:
        try:
            parsed += parser.parse_overrides([item])
        except OverrideParseException as err:
            problems.append(f"{item.split('=', 1)[0].lstrip('+~')}: `{item}` cannot be parsed "
                            f"({str(err).splitlines()[0]}). Fix: quote the value: 'key=\"a value\"'.")
    return parsed, problems


def _values(override) -> List[Any]:
    """The typed values an override sets (each choice of a sweep; none for range / glob sweeps)."""
    from hydra.core.override_parser.types import ValueType

    if not override.is_sweep_override():
        return [override.value()]
    if override.value_type in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
        return list(override.sweep_iterator())
    return []


_NODES = {int: ("IntegerNode", "an integer"), float: ("FloatNode", "a number"), bool: ("BooleanNode", "true or false")}


def _value_problems(override, known: Dict[str, Any], dirs: Sequence[Path]) -> List[str]:
    """A group option that is not in the config tree, or a number / flag that is not one."""
    if override.is_delete():
        return []
    key = override.key_or_group
    if key in GROUPS:
        return [p for v in _values(override) if (p := _group_problem(key, v, dirs))]
    if known.get(key) not in _NODES:
        return []
    import omegaconf.nodes
    from omegaconf.errors import ValidationError

    node, what = _NODES[known[key]]
    for value in _values(override):
        if value is None or (isinstance(value, str) and "${" in value):
            continue  # null is the schema's to refuse; interpolations resolve later
        try:
            getattr(omegaconf.nodes, node)(value)  # the conversion OmegaConf applies when Hydra merges
        except ValidationError:
            return [f"{key}: {value!r} is not {what}. Fix: {key}=<{what}>."]
    return []


def _group_problem(group: str, value, dirs: Sequence[Path]) -> Optional[str]:
    if value is None:
        return f"{group}: null is not a config of group {group}. Fix: leave {group}= out for its default."
    options = sorted({str(p.relative_to(d / group).with_suffix("")) for d in dirs for p in (d / group).rglob("*.yaml")})
    problem = one_of(group, str(value), options)
    where = " or a dir given with --config-dir / hydra.searchpath" if len(dirs) > 1 else ""
    return problem and problem.replace(f"{group}: unknown value", f"{group}: no config named", 1) + (
        f" Fix: {group}=<one of them> (conf/{group}/{where} holds one file per option).")


def _renamed(key: str, value: str, spec: Any) -> Optional[str]:
    """One message naming the new field of a task option that was renamed (None: not one);
    spec: the task's (None: no task chosen)."""
    old = key[len("task."):] if key.startswith("task.") else None
    if old is None or spec is None or not spec.renamed or old not in spec.renamed:
        return None
    new, how = spec.renamed[old]
    return (f"{key}: task={spec.name} no longer has this option; it is {new} now{f' ({how})' if how else ''}. "
            f"Fix: {new}={value if not how else '<value>'}.")


def _unknown(key: str, plus: bool, known: Dict[str, Any], task: str) -> str:
    section = key.split(".")[0]
    candidates = [p for p in known if p.split(".")[0] == section] or list(known)
    close = [ALIASES[key]] if key in ALIASES else _close_fields(key, candidates)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    where = f" of task={task}" if section == "task" else ""
    what = "adds a key that nothing reads" if plus else "is not a field"
    return (f"{key}: {'+' if plus else ''}{key} {what}{where}; the setting would be ignored or refused.{hint} "
            f"Fix: use a field of the schema (`optmodel --cfg job` prints them all).")


def _close_fields(key: str, candidates: Sequence[str]) -> List[str]:
    """Fields of the same section whose name holds the typed one (`bits` -> `effective_bits`)
    first, then the closest spellings."""
    parent, _, leaf = key.rpartition(".")
    holding = [c for c in candidates if c.rpartition(".")[0] == parent and len(leaf) >= 3
               and (leaf in c.rpartition(".")[2] or c.rpartition(".")[2] in leaf)]
    spelled = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    return (holding + [c for c in spelled if c not in holding])[:3]
