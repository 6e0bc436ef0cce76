"""task=export: its config and checks (see optmodel/tasks/export/run.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from omegaconf import DictConfig

from optmodel.config.deploy import DEPLOY_TARGETS, deploy_problems
from optmodel.facts import choices
from optmodel.facts.errors import one_of
from optmodel.facts.rundir import read_origin
from optmodel.tasks.spec import TaskConfig, TaskSpec, export_layout_problems


@dataclass
class ExportTaskConfig(TaskConfig):
    name: str = "export"
    format: str = "hf"  # hf (unified HF checkpoint, hf_quant_config.json) | vllm_fq (bf16 weights + quantizer amax)
    dtype: str = "bfloat16"  # bfloat16 | float16
    deploy: str = "none"  # none | vllm | sglang | trtllm | any: refuse an export that engine's ModelOpt loader rejects


def problems(cfg: DictConfig) -> List[str]:
    found = []  # without run.load: refused by validate.task_problems (SPEC.needs_earlier_model)
    if (p := one_of("task.format", cfg.task.format, choices.EXPORT_FORMATS)):
        found.append(p)
    if (p := one_of("task.dtype", cfg.task.dtype, ("bfloat16", "float16"))):
        found.append(p)
    return found + export_layout_problems(cfg) + _deploy_problems(cfg)


def _deploy_problems(cfg: DictConfig) -> List[str]:
    """The loaded run's quantization (its manifest) against the engine of task.deploy."""
    if (p := one_of("task.deploy", cfg.task.deploy, DEPLOY_TARGETS)):
        return [p]
    if cfg.task.deploy == "none":
        return []
    quant = (read_origin(cfg.run.get("load")) or {}).get("quantization")
    if not quant:  # unquantized (or unreadable: run.load's checks say so): every engine serves bf16
        return []
    fmt = str(quant.get("format"))
    if fmt.startswith("recipe:"):
        return [f"task.deploy: run.load={cfg.run.load} was quantized with a recipe ({fmt}), whose export is not "
                f"known ahead. Fix: task.deploy=none."]
    mixed = fmt == "auto_quantize"
    formats = [] if mixed else [fmt]
    return deploy_problems("run.load", cfg.task.deploy, formats, quant.get("kv_cache") or "none",
                           bool(quant.get("weight_only")), mixed=mixed, export_format=cfg.task.format)


SPEC = TaskSpec(name="export", schema=ExportTaskConfig, problems=problems,
                backends=("hf", "megatron"),
                outputs=lambda cfg, quantized: ("export",),
                needs_earlier_model="exports the model of an earlier run. Fix: run.load=<quantize (or prune, distill) "
                                    "run dir>.")
