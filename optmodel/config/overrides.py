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
import typing
from typing import Any, Dict, List, Sequence

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
GROUPS = ("model", "parallel", "task", "backend", "data", "logger", "experiment")


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


def _known_paths(task_names: Sequence[str]) -> Dict[str, Any]:
    from optmodel.config.schema import OptmodelConfig
    from optmodel.config.tasks import task_specs

    paths = {p: t for p, t in schema_paths(OptmodelConfig).items() if not p.startswith("task")}
    specs = task_specs()
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


def _chosen(overrides: Sequence[str], group: str, default: str) -> str:
    for o in overrides:
        if o.startswith(f"{group}="):
            return o.split("=", 1)[1]
    return default


def override_problems(argv: Sequence[str]) -> List[str]:
    """Problems of the `key=value` overrides in `argv` (flags, groups and hydra.* are Hydra's)."""
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    task = _chosen(overrides, "task", "quantize")
    tasks: List[str] = task.split(",")
    if _chosen(overrides, "experiment", ""):
        from optmodel.config.tasks import task_specs

        tasks = list(task_specs())  # an experiment may pick any task
    known = _known_paths(tasks)
    problems = []
    for item in overrides:
        key = item.split("=", 1)[0]
        plus = key.startswith("+")
        key = key.lstrip("+~")
        if item.lstrip("+~").startswith("hydra") or item.startswith("~") or key in GROUPS or "/" in key:
            continue
        if key in known or _free_form(key, known):
            continue
        problems.append(_unknown(key, plus, known, task))
    return problems


def _unknown(key: str, plus: bool, known: Dict[str, Any], task: str) -> str:
    section = key.split(".")[0]
    candidates = [p for p in known if p.split(".")[0] == section] or list(known)
    close = [ALIASES[key]] if key in ALIASES else difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    where = f" of task={task}" if section == "task" else ""
    what = "adds a key that nothing reads" if plus else "is not a field"
    return (f"{key}: {'+' if plus else ''}{key} {what}{where}; the setting would be ignored or refused.{hint} "
            f"Fix: use a field of the schema (`optmodel --cfg job` prints them all).")
