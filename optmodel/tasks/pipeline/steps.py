"""task=pipeline's steps seen as plain tasks: each step's config is `task.<step>` (that task's
own schema), and a step is resolved and validated with `cfg.task` = its config, exactly as
`task=<step>` would be; what only a chain has (order, shared outputs) is checked here too.
Light imports only (validation runs before anything heavy)."""

from __future__ import annotations

import re
from typing import List, Optional

from omegaconf import DictConfig, open_dict

from optmodel.config.deploy import deploy_problems
from optmodel.config.format_aliases import canonical_format, resolve_format_aliases
from optmodel.config.gate import gate_metrics, one_gate_problems
from optmodel.facts.checkpoint import resolve_checkpoint
from optmodel.facts.errors import one_of
from optmodel.facts.rundir import read_origin
from optmodel.tasks.registry import task_spec, task_specs

TRAINING_STEPS = ("finetune", "distill")


def step_names() -> List[str]:
    """Tasks that run as a pipeline step (their spec declares the outputs they write)."""
    return [name for name, spec in task_specs().items() if spec.outputs is not None]


def step_config(cfg: DictConfig, name: str) -> DictConfig:
    """cfg with cfg.task = the step's config: what its task's checks and runner read."""
    step = cfg.copy()
    with open_dict(step):
        step.task = cfg.task[name]
    return step


def input_model(cfg: DictConfig) -> Optional[str]:
    """What the pipeline's first step loads: run.load's run dir, else the checkpoint (None: unknown)."""
    if cfg.run.get("load"):
        return str(cfg.run.load)
    ckpt = resolve_checkpoint(cfg.model)
    return str(ckpt) if ckpt is not None else None


def resolve_pipeline(cfg: DictConfig) -> DictConfig:
    """Each step's format names made canonical (as task=<step> would), and a distill step's
    teacher defaulted to the pipeline's input model (recorded in the run's config.yaml)."""
    cfg = cfg.copy()
    for name in cfg.task.steps:
        if name not in cfg.task:
            continue  # validation names the unknown step
        resolved = resolve_format_aliases(step_config(cfg, name)).task
        with open_dict(cfg):
            cfg.task[name] = resolved
            if name == "distill" and not resolved.teacher and input_model(cfg) is not None:
                cfg.task[name].teacher = input_model(cfg)
    return cfg


def as_step_field(problem: str, name: str) -> str:
    """A step's problem in the pipeline's terms: `task.quant_cfg` -> `task.quantize.quant_cfg`."""
    return re.sub(r"(?<![\w/.])task\.(?=[a-z_])", f"task.{name}.", problem)


def quantizes(task: DictConfig) -> bool:
    """The step leaves the model quantized (quantize; QAT / QAD from a fresh PTQ)."""
    return task.name == "quantize" or (task.name in TRAINING_STEPS and bool(task.get("quant_cfg")))


def pipeline_problems(cfg: DictConfig) -> List[str]:
    steps = list(cfg.task.steps)
    valid = step_names()
    if not steps:
        return [f"task.steps: empty. Fix: e.g. task.steps=[quantize,mmlu,export] (steps: {', '.join(valid)})."]
    problems: List[str] = []
    origin = read_origin(cfg.run.get("load"))
    quantized = bool(origin and origin.get("quantization"))
    written = {}  # output key -> the step writing it
    for i, name in enumerate(steps):
        where = f"task.steps[{i}]"
        if name not in valid:
            problems.append(f"{one_of(where, name, valid)} (a pipeline step is one of these tasks)")
            continue
        if name in steps[:i]:
            problems.append(f"{where}: {name} is already step {steps.index(name)}; a step's settings live under "
                            f"task.{name}, so each task runs once in a pipeline. Fix: drop the repeat, or run a "
                            f"second pipeline with run.load=<this run dir>.")
            continue
        spec = task_spec(name)
        step = step_config(cfg, name)
        if cfg.backend.name not in spec.backends:
            problems.append(f"{where}: {name} does not run on backend={cfg.backend.name} (it runs on "
                            f"{', '.join(spec.backends)}). Fix: backend={spec.backends[0]}, or drop the step.")
        if spec.needs_earlier_model and i == 0 and not cfg.run.get("load"):
            problems.append(f"{where}: {name} {spec.needs_earlier_model.split('. Fix:')[0]}, and it is the first "
                            f"step. Fix: a step before it that makes the model (e.g. task.steps=[quantize,{name}]), "
                            f"or run.load=<a run dir>.")
        step_problems = spec.problems(step)
        if name == "distill" and not step.task.teacher:
            # the teacher is the pipeline's input model, whose missing checkpoint is refused as model.checkpoint
            step_problems = [p for p in step_problems if not p.startswith("task.teacher:")]
        problems += [as_step_field(p, name) for p in step_problems]
        if name == "export":
            problems += export_deploy_problems(cfg, steps[:i])
        for key in spec.outputs(step, quantized):
            if key in written:
                problems.append(output_conflict(cfg, written[key], name, key))
            else:
                written[key] = name
        quantized = quantized or quantizes(step.task)
    return problems


# The field of a step that turns an output off (the fix of two steps writing one output).
OUTPUT_SWITCHES = {"saved_model": "save_model", "export": "export"}


def output_conflict(cfg: DictConfig, earlier: str, later: str, key: str) -> str:
    """Two steps write outputs.<key>: the message names the field that turns it off, of the
    earlier step first (its output is the one the later step replaces)."""
    switch = OUTPUT_SWITCHES.get(key)
    fields = [f"task.{s}.{switch}" for s in (earlier, later) if switch and switch in step_config(cfg, s).task]
    fix = " or ".join(f"{f}=false" for f in fields) + (", or drop a step" if fields else "drop one of the steps")
    return (f"{fields[0] if fields else 'task.steps'}: steps {earlier} and {later} both write outputs.{key} (one run "
            f"dir holds one of each). Fix: {fix}.")


def export_deploy_problems(cfg: DictConfig, earlier: List[str]) -> List[str]:
    """task.export.deploy against the format an earlier quantize step makes (a plain export
    checks the format run.load's manifest recorded)."""
    deploy = cfg.task.export.deploy
    if deploy == "none" or "quantize" not in earlier:
        return []
    quant = cfg.task.quantize
    if quant.recipe and not quant.auto_quantize.enabled:
        return [f"task.export.deploy: {deploy} is checked against named formats; task.quantize.recipe's export is "
                f"not known ahead. Fix: task.export.deploy=none, or a task.quantize.quant_cfg."]
    mixed = bool(quant.auto_quantize.enabled)
    formats = [] if mixed else [canonical_format(quant.quant_cfg)]
    found = deploy_problems("task.quantize.quant_cfg", deploy, formats, quant.kv_cache, quant.weight_only, mixed=mixed,
                            export_format=cfg.task.export.format)
    return [p.replace("task.deploy", "task.export.deploy") for p in found]


def pipeline_gate_problems(cfg: DictConfig) -> List[str]:
    """Each step's task.<step>.gate, and the pipeline's task.gate against what its steps
    measure before and after."""
    task = cfg.task
    steps = [s for s in task.steps if s in task and task[s].get("gate") is not None]
    problems = []
    names, lm_eval = [], []
    for s in steps:
        measured = gate_metrics(task[s])
        problems += one_gate_problems(task[s].gate, task[s], f"task.{s}.gate", measured)
        names += measured[0]
        lm_eval += measured[1]
    return one_gate_problems(task.gate, task, "task.gate", (list(dict.fromkeys(names)), lm_eval),
                             scope="task.<step>", where="any step of task.steps") + problems
