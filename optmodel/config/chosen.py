"""Whether the user chose a config group on the command line (or through an experiment),
as opposed to getting the default: run.load inherits a model only when none was chosen."""

from __future__ import annotations

from optmodel.facts.paths import conf_dir


def default_choice(group: str) -> str:
    """The option conf/config.yaml's defaults list picks for `group` (e.g. task: quantize)."""
    import yaml

    defaults = yaml.safe_load((conf_dir() / "config.yaml").read_text()).get("defaults", [])
    return next(entry[group] for entry in defaults if isinstance(entry, dict) and group in entry)


def group_was_chosen(group: str) -> bool:
    """`group=...` among the overrides, or the chosen experiment overrides /<group>; False
    outside a Hydra run."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return False
    overrides = [str(o).lstrip("+~") for o in hydra_cfg.overrides.task]
    if any(o.split("=")[0] == group for o in overrides):
        return True
    experiment = hydra_cfg.runtime.choices.get("experiment")
    if not experiment:
        return False
    path = conf_dir() / "experiment" / f"{experiment}.yaml"
    return path.is_file() and f"/{group}:" in path.read_text()
