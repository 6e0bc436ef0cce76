"""`run.load=<run dir>`: the run's model config becomes the one that run produced.

A pruned, distilled or quantized run dir records the model config of what it saved
(`model_config` in its manifest; its saved config.json is the truth of the shape), so a
later run builds that shape with nothing typed. A `model=` the user typed must agree with
it: each contradicting field is named and the run refused.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from optmodel.config.schema import ModelConfig
from optmodel.facts.errors import ConfigError
from optmodel.facts.hf_config import format_value, from_hf_config_dict, model_config_mismatches
from optmodel.facts.rundir import read_origin, recorded_model_config, saved_model_path


def produced_model_config(run_dir: str):
    """The model config `run_dir` produced, pointed at its saved model when that is a HF
    checkpoint (config.json overrides the record: it is what will be loaded). None: unreadable."""
    recorded = recorded_model_config(run_dir)
    if recorded is None:
        return None
    saved = saved_model_path(read_origin(run_dir) or {})
    if saved is not None and (saved / "config.json").is_file():
        import json

        try:
            recorded.update(from_hf_config_dict(json.loads((saved / "config.json").read_text())))
        except ValueError:
            pass  # an unreadable config.json is reported by the checkpoint checks
        recorded["checkpoint"] = str(saved)
    return recorded


def with_model_fields(model_cfg: DictConfig, fields: dict) -> DictConfig:
    """`model_cfg` with `fields` replacing its values (nested blocks replaced whole, not
    merged: a produced rope_scaling or moe block is the whole truth), schema-checked."""
    plain = OmegaConf.to_container(model_cfg, resolve=True)
    plain.update(fields)
    return OmegaConf.merge(OmegaConf.structured(ModelConfig), plain)


def inherit_run_model(cfg: DictConfig, typed_model: bool = False) -> DictConfig:
    """cfg with cfg.model replaced by what `run.load` produced (unchanged without run.load or
    when the run dir cannot be read: validation then says why). `typed_model`: the user chose
    model= (or an experiment did); its numbers must match the run's."""
    load = cfg.run.get("load")
    produced = produced_model_config(load) if load else None
    if produced is None:
        return cfg
    if typed_model:
        diffs = model_config_mismatches(cfg.model, produced)
        if diffs:
            # a run that changed the architecture (prune) keeps the model's name: naming it again is no fix
            name = produced.get("name")
            changed = name == cfg.model.name
            raise ConfigError([
                f"model: run.load={load} holds model {name!r}, whose architecture differs from model={cfg.model.name} "
                f"in {len(diffs)} field(s){' (the run changed it)' if changed else ''}. Fix: leave model= out "
                f"(run.load brings its architecture){'' if changed else f', or model={name}'}."
            ] + [f"{path}: model={cfg.model.name} says {format_value(ours)} but the run in {load} produced "
                 f"{format_value(theirs)}" for path, ours, theirs in diffs])
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.model = with_model_fields(cfg.model, produced)
    return cfg
