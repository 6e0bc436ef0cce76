"""task=validate: acceptance length of an EAGLE3 draft against its target (see optmodel/tasks/validate/run.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig

from optmodel.facts.rundir import read_origin
from optmodel.speculative.serving import trained_aux_ids
from optmodel.tasks.eagle3.spec import AcceptanceConfig, acceptance_problems, megatron_problems
from optmodel.tasks.spec import TaskConfig, TaskSpec


@dataclass
class ValidateTaskConfig(TaskConfig):
    name: str = "validate"
    draft: Optional[str] = None  # an exported draft dir; None: the `draft` output of run.load's eagle3 run
    acceptance: AcceptanceConfig = field(default_factory=AcceptanceConfig)


def draft_dir(cfg: DictConfig) -> Optional[str]:
    if cfg.task.draft:
        return cfg.task.draft
    origin = read_origin(cfg.run.get("load"))
    return ((origin or {}).get("outputs") or {}).get("draft")


def draft_fit_problems(cfg: DictConfig, path: Path) -> List[str]:
    """The exported draft against the target it is put on: aux layers inside the target's layers."""
    import json

    conf = json.loads((path / "config.json").read_text())
    layers = int(cfg.model.num_layers)
    aux = trained_aux_ids(path, conf)  # an engine's export may number them its own way
    found = []
    outside = [i for i in aux if not 0 <= int(i) < layers]
    if outside:
        found.append(f"task.draft: {path} reads the target's layers {outside} (eagle_aux_hidden_state_layer_ids "
                     f"{aux}); model {cfg.model.name} has layers 0..{layers - 1}. Fix: the draft trained for this "
                     f"target (run.load=<its eagle3 run>).")
    return found


# What optmodel.speculative.draft.spec_of_export reads from an exported draft's config.json.
DRAFT_KEYS = ("num_hidden_layers", "draft_vocab_size", "intermediate_size", "eagle_config.eagle_aux_hidden_state_layer_ids")


def draft_problems(path: Path) -> List[str]:
    """Why `path` is not an exported EAGLE3 draft (cheap: its config.json and file listing)."""
    import json

    fix = "Fix: task.draft=<an eagle3 run's draft/ dir> (export_speculative_decoding output), or run.load=<that run>."
    try:
        conf = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return [f"task.draft: {path} holds no readable config.json: not an exported draft. {fix}"]
    missing = [k for k in DRAFT_KEYS if _lookup(conf, k) is None]
    if missing:
        return [f"task.draft: {path} is not an EAGLE3 draft (its config.json has no {', '.join(missing)}; "
                f"a target model's checkpoint?). {fix}"]
    if not (path / "model.safetensors").is_file():
        return [f"task.draft: {path} holds no model.safetensors (the draft's weights). {fix}"]
    return []


def _lookup(conf, dotted: str):
    for part in dotted.split("."):
        conf = conf.get(part) if isinstance(conf, dict) else None
    return conf


def problems(cfg: DictConfig) -> List[str]:
    found = megatron_problems(cfg)
    path = draft_dir(cfg)
    if path is None:
        found.append("task.draft: no draft to validate. Fix: run.load=<an eagle3 run dir> or task.draft=<exported draft dir>.")
    else:
        found += draft_problems(Path(path).expanduser()) or draft_fit_problems(cfg, Path(path).expanduser())
    return found + acceptance_problems(cfg.task.acceptance, "task.acceptance")


SPEC = TaskSpec(name="validate", schema=ValidateTaskConfig, problems=problems,
                backends=("hf", "megatron"))
