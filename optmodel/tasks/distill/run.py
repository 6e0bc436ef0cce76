"""task=distill: knowledge distillation of the run's model from a teacher; QAD when the
student is quantized.

    data -> student, teacher -> before -> train (KD) -> after -> outputs

The student is the run's model (a pruned or quantized run.load, or the checkpoint); the
teacher is task.teacher, by default the model the student's run started from (its
manifest's input_checkpoint). Logit KD is ModelOpt's KDTrainer (QADTrainer for a fake-quant
student); intermediate layer pairs or a kept LM loss go through mtd.convert and a
DistillationModel (optmodel.training.distill). The rest is task=finetune's workflow.
"""

from __future__ import annotations

from typing import Any, Dict

from optmodel.tasks.distill.spec import teacher_source
from optmodel.tasks.finetune.run import train_task


def run(ctx) -> Dict[str, Any]:
    return train_task(ctx, teacher_source=teacher_source(ctx.cfg), task_name="distill")
