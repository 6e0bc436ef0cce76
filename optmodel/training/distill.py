"""Knowledge-distillation losses on Hugging Face models, from a DistillationConfig.

Logits only with `skip_lm_loss` (the Megatron-LM default) is exactly ModelOpt's KDTrainer
(masked KL of the output logits at `logit_kl_temperature`). Anything else — intermediate
layer pairs, or the LM loss kept beside the KD loss — goes through `mtd.convert` into a
`DistillationModel` whose criterion pairs the logits (`LogitsDistillationLoss`) and each
intermediate pair (cosine or MSE per token, with a learned projection when hidden sizes
differ), reduced under the labels' mask and balanced by ModelOpt's Megatron
`LogitsAndIntermediatesLossBalancer` — the same weighting `--export-kd-cfg` gives.
"""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import nn
from torch.nn.modules.loss import _Loss

IGNORE_INDEX = -100


def needs_distillation_model(d) -> bool:
    return bool(d.intermediate_layer_pairs) or not d.skip_lm_loss


def logit_layers(d, model) -> tuple:
    if d.logit_layers:
        return tuple(d.logit_layers)
    name = "lm_head" if hasattr(model, "lm_head") else "output_layer"
    return name, name


def _tensor_of(output):
    return output[0] if isinstance(output, (tuple, list)) else output


class HiddenStateLoss(_Loss):
    """Per-token cosine (1 - cos) or MSE between student and teacher activations: [b, s]."""

    def __init__(self, kind: str = "cosine", projection: Optional[nn.Module] = None):
        super().__init__()
        self.kind = kind
        self.projection = projection

    def forward(self, out_s, out_t):
        s, t = _tensor_of(out_s).float(), _tensor_of(out_t).float().detach()
        if self.projection is not None:
            s = self.projection(s)
        if self.kind == "mse":
            return (s - t).pow(2).mean(dim=-1)
        return 1.0 - F.cosine_similarity(s, t, dim=-1)


class PerTokenLogitsLoss(_Loss):
    """ModelOpt's LogitsDistillationLoss per token ([b, s]); 'Logits' in the class name is how
    the Megatron balancer tells the logits loss from the intermediate ones."""

    def __init__(self, temperature: float):
        super().__init__()
        from modelopt.torch.distill.losses import LogitsDistillationLoss

        self.kl = LogitsDistillationLoss(temperature=temperature, reduction="none")

    def forward(self, out_s, out_t):
        return self.kl(_tensor_of(out_s).float(), _tensor_of(out_t).float())



def convert_to_distillation_model(student, teacher, d):
    """`mtd.convert` the student into a DistillationModel with the config's criterion."""
    import modelopt.torch.distill as mtd
    from modelopt.torch.distill.plugins.megatron import LogitsAndIntermediatesLossBalancer

    criterion = {logit_layers(d, student): PerTokenLogitsLoss(d.logit_kl_temperature)}
    s_hidden = getattr(student.config, "hidden_size", None)
    t_hidden = getattr(teacher.config, "hidden_size", None)
    projection = None
    if s_hidden and t_hidden and s_hidden != t_hidden:  # width-pruned student: one shared projection
        projection = nn.Linear(s_hidden, t_hidden, bias=False).to(next(student.parameters()).device)
    for pair in d.intermediate_layer_pairs:
        kind = pair[2] if len(pair) == 3 else "cosine"
        criterion[(pair[0], pair[1])] = HiddenStateLoss(kind, projection)
    balancer = LogitsAndIntermediatesLossBalancer(kd_loss_scale=d.kd_loss_scale, skip_original_loss=d.skip_lm_loss)
    config = {"teacher_model": teacher, "criterion": criterion, "loss_balancer": balancer}
    return mtd.convert(student, mode=[("kd_loss", config)])


def masked_token_mean(labels):
    """The reduction of per-token [b, s] losses: mean over positions whose next token is a target."""
    mask = (labels[..., 1:] != IGNORE_INDEX).float()

    def reduce(loss):
        loss = loss[..., : mask.shape[-1]]
        return (loss * mask).sum() / mask.sum().clamp(min=1)

    return reduce


class DistillationModelLoss:
    """Trainer mixin: the loss of a DistillationModel student (train: balanced KD loss;
    eval: the student's LM loss alone, the teacher not run)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        dmodel = self.accelerator.unwrap_model(model)
        if not model.training:
            with dmodel.only_student_forward():
                outputs = model(**inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        outputs = model(**inputs)
        losses = dmodel.compute_kd_loss(student_loss=outputs.loss, loss_reduction_fn=masked_token_mean(inputs["labels"]))
        loss = losses["kd_loss"] if isinstance(losses, dict) else losses
        return (loss, outputs) if return_outputs else loss


def export_student(model):
    """The plain student of a DistillationModel (teacher and hooks removed)."""
    import modelopt.torch.distill as mtd
    import modelopt.torch.opt as mto
    from modelopt.torch.distill import DistillationModel
    from modelopt.torch.opt.conversion import ModeloptStateManager

    if not isinstance(model, DistillationModel):
        return model
    student = mtd.export(model)
    # The export records its modes (kd_loss, export_student), none of which is saved: without a
    # quantizer to keep, the HF save would write a modelopt_state.pth of no modes beside a plain model.
    if ModeloptStateManager.is_converted(student) and not mto.modelopt_state(student)["modelopt_state_dict"]:
        ModeloptStateManager.remove_state(student)
    return student
