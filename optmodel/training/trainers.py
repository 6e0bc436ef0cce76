"""Which trainer trains a run: ModelOpt's trainers on transformers' Trainer.

| student      | no teacher                  | teacher, logits KD        | teacher, layer pairs / LM loss kept |
|--------------|-----------------------------|---------------------------|-------------------------------------|
| plain        | ModelOptHFTrainer (SFT)     | KDTrainer                 | DistillationModel + ModelOptHFTrainer |
| fake-quant   | QATTrainer (QAT)            | QADTrainer (QAD)          | DistillationModel + QATTrainer (QAD) |
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional


def is_quantized(model) -> bool:
    from modelopt.torch.quantization.utils import is_quantized as _is_quantized

    return bool(_is_quantized(model))


def trainer_kind(model, teacher, distillation) -> str:
    """sft | qat | kd | qad | kd_layerwise | qad_layerwise."""
    from optmodel.training.distill import needs_distillation_model

    quantized = is_quantized(model)
    if teacher is None:
        return "qat" if quantized else "sft"
    base = "qad" if quantized else "kd"
    return f"{base}_layerwise" if needs_distillation_model(distillation) else base


def _classes():
    from modelopt.torch.distill.plugins.huggingface import KDTrainer
    from modelopt.torch.opt.plugins.transformers import ModelOptHFTrainer
    from modelopt.torch.quantization.plugins.transformers_trainer import QADTrainer, QATTrainer

    from optmodel.training.distill import DistillationModelLoss

    class LayerwiseKDTrainer(DistillationModelLoss, ModelOptHFTrainer):
        """KD through a DistillationModel student (intermediate pairs / LM loss kept)."""

    class LayerwiseQADTrainer(DistillationModelLoss, QATTrainer):
        """QAD through a DistillationModel fake-quant student."""

    return {"sft": ModelOptHFTrainer, "qat": QATTrainer, "kd": KDTrainer, "qad": QADTrainer,
            "kd_layerwise": LayerwiseKDTrainer, "qad_layerwise": LayerwiseQADTrainer}


def build_trainer(kind: str, model, args, train_dataset, eval_dataset=None, teacher=None, distillation=None,
                  callbacks: Optional[List[Any]] = None):
    """The trainer of `kind` (see trainer_kind); layerwise kinds expect `model` already converted
    by `optmodel.training.distill.convert_to_distillation_model`."""
    cls = _classes()[kind]
    kwargs: Dict[str, Any] = {}
    if kind in ("kd", "qad"):
        kwargs["distill_args"] = {"teacher_model": teacher, "temperature": distillation.logit_kl_temperature}
    return cls(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
               callbacks=callbacks or [], **kwargs)
