"""Earlier run dirs as inputs: what a later run may load from them, read from their manifest.

Light (no torch): validation and config inheritance use it before anything is loaded.
A run's restorable model is recorded under one of SAVED_MODEL_KEYS in the manifest's
outputs; `model_config` records the model config as produced (a pruned run: the pruned
shape), which `run.load=<dir>` inherits so nobody re-types a shape.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Dict, List, Optional

from optmodel.facts.library_sets import distributed_checkpoint_format_problem

MANIFEST_NAME = "optmodel.json"

# Newest first: saved_model is what tasks record; the others are quantize's and convert's names.
SAVED_MODEL_KEYS = ("saved_model", "quantized_model", "megatron_checkpoint")


def read_origin(run_dir: Optional[str]) -> Optional[Dict[str, Any]]:
    """The manifest of `run_dir`, or None when it is not a readable run dir."""
    if not run_dir:
        return None
    try:
        with open(Path(run_dir).expanduser() / MANIFEST_NAME) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return with_resolved_outputs(data, Path(run_dir).expanduser()) if isinstance(data, dict) else None


def saved_model_path(manifest: Dict[str, Any]) -> Optional[Path]:
    outputs = manifest.get("outputs") or {}
    for key in SAVED_MODEL_KEYS:
        if outputs.get(key):
            return Path(outputs[key])
    return None


def is_distributed_checkpoint(path: Path) -> bool:
    return (Path(path) / "metadata.json").is_file()


def run_dir_problems(run_dir: str, field: str = "run.load", backend: Optional[str] = None) -> List[str]:
    """Why `run_dir` cannot be loaded from (cheap: the manifest and a file listing); with
    `backend`, also whether that backend reads the kind of model it saved."""
    path = Path(run_dir).expanduser()
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        return [f"{field}: {path} is not an optmodel run dir (no {MANIFEST_NAME}). Fix: {field}=<the dir of a "
                f"finished optmodel run>."]
    origin = read_origin(str(path))
    if origin is None:
        return [f"{field}: {manifest_path} is corrupt (not a JSON object)."]
    status = effective_status(origin)
    saved = saved_model_path(origin)
    if status != "completed" and saved is None:
        return [f"{field}: the run in {path} did not complete (status {status!r}) and recorded no finished model; "
                f"its outputs cannot be trusted."]
    if saved is not None and not saved.exists():
        return [f"{field}: the model {path} saved, {saved}, does not exist (moved or deleted). Fix: put it back, or "
                f"re-run that run."]
    if saved is None or not ((saved / "config.json").is_file() or is_distributed_checkpoint(saved)):
        return [f"{field}: {path} holds no saved model (outputs.{SAVED_MODEL_KEYS[0]}). Fix: load a run that saved "
                f"its model (quantize with task.save_model=true, prune, distill, convert)."]
    if origin.get("quantization") and (saved / "config.json").is_file() and not (saved / "modelopt_state.pth").is_file():
        return [f"{field}: {saved} was saved quantized ({origin['quantization'].get('format')}) but holds no "
                f"modelopt_state.pth: loading it would give the unquantized model under a quantized label. "
                f"Fix: re-run the quantize run that wrote it."]
    if is_distributed_checkpoint(saved):
        return distributed_checkpoint_problems(saved, field, quantized=bool(origin.get("quantization"))) + \
            _backend_problems(path, saved, field, backend)
    return _backend_problems(path, saved, field, backend)


def distributed_checkpoint_problems(ckpt: Path, field: str, quantized: bool = False) -> List[str]:
    """A megatron distributed checkpoint missing its shard index, a shard file its index names,
    or (quantized) its ModelOpt state. Shard sizes: optmodel.backends.megatron_checkpoint."""
    import re


    unreadable = distributed_checkpoint_format_problem(ckpt, field)
    if unreadable:
        return [unreadable]
    fix = "Fix: copy it again from where it was written, or re-run that run."
    index = ckpt / ".metadata"
    if not index.is_file():
        return [f"{field}: {ckpt} has no .metadata (the index of its shards): the distributed checkpoint is "
                f"incomplete. {fix}"]
    names = sorted({m.decode() for m in re.findall(rb"__\d+_\d+\.distcp", index.read_bytes())})
    missing = [n for n in names if not (ckpt / n).is_file()]
    if missing:
        return [f"{field}: {ckpt} lacks {len(missing)} of the {len(names)} shard files its index names "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): the distributed checkpoint is "
                f"incomplete. {fix}"]
    if quantized and not (ckpt / "modelopt_state").is_dir():
        return [f"{field}: {ckpt} was saved quantized but holds no modelopt_state/: loading it would give the "
                f"unquantized model under a quantized label. {fix}"]
    return []


def _backend_problems(run_dir: Path, saved: Path, field: str, backend: Optional[str]) -> List[str]:
    """A saved model of a kind `backend` cannot load as saved."""
    if backend == "hf" and is_distributed_checkpoint(saved):
        return [f"{field}: {run_dir} saved a megatron distributed checkpoint ({saved}), which backend=hf does not "
                f"read. Fix: backend=megatron, or export it first (task=export backend=megatron "
                f"run.load={run_dir}) and load the export with model.checkpoint=<its export dir>."]
    if backend == "megatron" and (saved / "modelopt_state.pth").is_file():
        return [f"{field}: {run_dir} saved a quantized Hugging Face model ({saved}); backend=megatron imports its "
                f"weights but not their ModelOpt quantizer state, so it would run the unquantized model. "
                f"Fix: backend=hf."]
    return []


def recorded_model_config(run_dir: str) -> Optional[Dict[str, Any]]:
    """The model config a run produced: the manifest's model_config, else the model section of
    the run's config.yaml (runs written before model_config was recorded)."""
    origin = read_origin(run_dir)
    if origin is None:
        return None
    if isinstance(origin.get("model_config"), dict):
        return dict(origin["model_config"])
    config_yaml = Path(run_dir).expanduser() / "config.yaml"
    if config_yaml.is_file():
        from omegaconf import OmegaConf

        model = OmegaConf.to_container(OmegaConf.load(config_yaml)).get("model")
        return dict(model) if isinstance(model, dict) else None
    return None


def pid_alive(pid: Optional[int], host: Optional[str]) -> Optional[bool]:
    """Whether `pid` on `host` still runs; None when it cannot be told (another host, no pid)."""
    if not pid or host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def effective_status(manifest: Dict[str, Any]) -> str:
    """The manifest's status, with a `running` run whose process is gone read as `interrupted`."""
    status = manifest.get("status")
    if status == "running" and pid_alive(manifest.get("pid"), manifest.get("host")) is False:
        return "interrupted"
    return status


def read_manifest(run_dir: Path) -> Dict[str, Any]:
    """optmodel.json of `run_dir`, its outputs resolved against where the dir is now."""
    with open(Path(run_dir) / MANIFEST_NAME) as f:
        data = json.load(f)
    return with_resolved_outputs(data, run_dir)


# --- paths inside a run dir: recorded relative to it, so a moved or copied dir loads its own files
def relative_outputs(outputs: Dict[str, Any], run_dir: Path) -> Dict[str, Any]:
    """`outputs` with every absolute path inside `run_dir` made relative to it."""
    root = Path(run_dir).resolve()
    relative = {}
    for key, value in outputs.items():
        if isinstance(value, str) and value and os.sep in value:  # a path (not `hf`, `bfloat16`)
            try:
                value = str(Path(value).resolve().relative_to(root))
            except ValueError:
                pass  # outside the run dir (a checkpoint, another run): kept as given
        relative[key] = value
    return relative


def with_resolved_outputs(manifest: Dict[str, Any], run_dir: Path) -> Dict[str, Any]:
    """The manifest with outputs as absolute paths under `run_dir`, wherever it is now.

    Relative values name files of the run dir when such a file exists (others, like
    `export_format: hf`, are not paths). Manifests written before paths were relative hold
    absolute ones: those inside the dir the run was made in (.hydra/hydra.yaml or
    config.yaml say which) are moved under `run_dir` too."""
    run_dir = Path(run_dir).expanduser().absolute()
    made_in: list = []  # looked up once, when an absolute path needs it

    def resolve(outputs):
        if not isinstance(outputs, dict):
            return outputs
        resolved = {}
        for key, value in outputs.items():
            if isinstance(value, str) and value:
                if not os.path.isabs(value):
                    if (run_dir / value).exists():
                        value = str(run_dir / value)
                else:
                    made_in[:] = made_in or [_made_in(run_dir) or ""]
                    if made_in[0] and Path(value).is_relative_to(made_in[0]):
                        value = str(run_dir / Path(value).relative_to(made_in[0]))
            resolved[key] = value
        return resolved

    if "outputs" in manifest:
        manifest = {**manifest, "outputs": resolve(manifest["outputs"])}
    if isinstance(manifest.get("steps"), dict):  # task=pipeline: each step's outputs
        manifest["steps"] = {name: {**step, "outputs": resolve(step.get("outputs"))} if isinstance(step, dict) else step
                             for name, step in manifest["steps"].items()}
    return manifest


def _made_in(run_dir: Path) -> str | None:
    """The dir an older run wrote its absolute paths under."""
    import yaml

    for name, keys in ((".hydra/hydra.yaml", ("hydra", "runtime", "output_dir")), ("config.yaml", ("run", "output_dir"))):
        try:
            value = yaml.safe_load((run_dir / name).read_text())
            for key in keys:
                value = value[key]
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
            continue
        if isinstance(value, str) and value:
            return value
    return None
