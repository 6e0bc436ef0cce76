"""task=pipeline: several tasks on one model load (see optmodel/tasks/pipeline/run.py).

    optmodel task=pipeline task.steps=[quantize,mmlu,export] task.quantize.quant_cfg=fp8 task.mmlu.data_dir=DIR

Each step's settings are `task.<step>`, that task's own schema, checked as `task=<step>`
would be (optmodel/tasks/pipeline/steps.py); in a pipeline the quantize step exports nothing by
default (task.quantize.export=false): the export is a step of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from optmodel.config.gate import GateConfig
from optmodel.tasks.distill.spec import DistillTaskConfig
from optmodel.tasks.eval.spec import EvalTaskConfig
from optmodel.tasks.export.spec import ExportTaskConfig
from optmodel.tasks.finetune.spec import FinetuneTaskConfig
from optmodel.tasks.generate.spec import GenerateTaskConfig
from optmodel.tasks.mmlu.spec import MmluTaskConfig
from optmodel.tasks.pipeline.steps import pipeline_gate_problems, pipeline_problems, resolve_pipeline
from optmodel.tasks.prune.spec import PruneTaskConfig
from optmodel.tasks.quantize.spec import QuantizeTaskConfig
from optmodel.tasks.spec import TaskConfig, TaskSpec


@dataclass
class PipelineTaskConfig(TaskConfig):
    name: str = "pipeline"
    steps: List[str] = field(default_factory=lambda: ["quantize", "mmlu", "export"])  # in order, each task once
    # accuracy budget: the first step's base against the last measurement; checked before any step writes a model
    gate: GateConfig = field(default_factory=GateConfig)
    # the settings of each step (used only when it is in steps); a step task's spec declares its outputs
    quantize: QuantizeTaskConfig = field(default_factory=lambda: QuantizeTaskConfig(export=False))
    prune: PruneTaskConfig = field(default_factory=PruneTaskConfig)
    distill: DistillTaskConfig = field(default_factory=DistillTaskConfig)  # teacher null: the pipeline's input model
    finetune: FinetuneTaskConfig = field(default_factory=FinetuneTaskConfig)
    mmlu: MmluTaskConfig = field(default_factory=MmluTaskConfig)
    eval: EvalTaskConfig = field(default_factory=EvalTaskConfig)
    generate: GenerateTaskConfig = field(default_factory=GenerateTaskConfig)
    export: ExportTaskConfig = field(default_factory=ExportTaskConfig)


SPEC = TaskSpec(name="pipeline", schema=PipelineTaskConfig, problems=pipeline_problems,
                gate_problems=pipeline_gate_problems, resolve=resolve_pipeline, backends=("hf", "megatron"))
