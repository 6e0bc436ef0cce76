"""EAGLE3 on a megatron-core target: ModelOpt's Megatron EAGLE (`mtsp.convert` of a GPTModel,
modelopt/torch/speculative/plugins/megatron_eagle.py), trained on the megatron training core
(optmodel.training.megatron), exported in the same HF layout as backend=hf's draft.

- fit: the target frozen, the draft trained by megatron-core's schedule / DDP / optimizer,
  each micro-batch's loss ModelOpt's per-token EAGLE loss summed over the loss mask;
- features: the target's hidden states in the hf dump's format (forward hooks; PP stages
  send theirs);
- convert / export / attach: optmodel.speculative.megatron_draft (the draft, the hf layout).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional

from optmodel.distributed import is_rank0
from optmodel.speculative.convert import DraftSpec
from optmodel.speculative.data import real_tokens_per_row
from optmodel.speculative.megatron_draft import attach, convert, eagle_scope, export
from optmodel.speculative.ops import RowLog, throughput
from optmodel.speculative.workflow import vocab_mapping
from optmodel.training.megatron_kd import loss_func

log = logging.getLogger("optmodel")


class EagleRows:
    """Training rows as stacked tensors (what the megatron training core's micro-batches index);
    offline rows (optmodel.speculative.features) also carry the target's dumped hidden states."""

    ONLINE = ("input_ids", "attention_mask", "loss_mask")
    OFFLINE = ("aux_hidden_states", "base_model_hidden_states")

    def __init__(self, rows: List[dict]):
        import torch

        offline = "base_model_outputs" in rows[0]
        self.fields = self.ONLINE + (self.OFFLINE if offline else ())
        for name in self.ONLINE:
            setattr(self, name, torch.stack([r[name] for r in rows]))
        for name in self.OFFLINE if offline else ():
            setattr(self, name, torch.stack([r["base_model_outputs"][name] for r in rows]))

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def forward_step(device):
    """megatron-core's forward_step_func: ModelOpt's EAGLE forward (per-token loss [b, s],
    the frozen target's own LM loss zeroed) masked by the rows' loss mask; offline rows hand
    it the dumped hidden states instead of running the target's decoder."""
    def step(data_iterator, model):
        batch = next(data_iterator)
        ids = batch["input_ids"].to(device)
        loss_mask = (batch["loss_mask"] * batch["attention_mask"]).float().to(device)
        offline = {}
        if "aux_hidden_states" in batch:  # ModelOpt's eagle_offline forward takes them [s, b, h]
            offline = {"aux_hidden_states": batch["aux_hidden_states"].transpose(0, 1).contiguous().to(device),
                       "hidden_states": batch["base_model_hidden_states"].transpose(0, 1).contiguous().to(device)}
        with eagle_scope(unwrapped(model)):
            output = model(ids, labels=ids, **offline)
        return output, partial(loss_func, loss_mask, model)

    return step


def unwrapped(model):
    while hasattr(model, "module"):  # megatron-core's DDP wrapper
        model = model.module
    return model


def fit(handle, rows: List[dict], task, run_dir: Path, seed: int, on_step: Optional[Callable[[int, int], None]] = None,
        log_fn: Callable[[dict], None] = lambda m: None, paused: Optional[List[float]] = None,
        resume: bool = False) -> Dict[str, object]:
    """Train the converted handle's draft on `rows` per task.training (the training stack's
    config, as finetune's); `on_step(step, steps)` after every optimizer step (AL checks);
    `paused[0]`: seconds spent in on_step, kept out of throughput."""
    from optmodel.training.checkpoints import CHECKPOINTS_DIR
    from optmodel.training.megatron import fit_megatron

    result = fit_megatron(handle, task.training, EagleRows(rows), output_dir=Path(run_dir) / CHECKPOINTS_DIR, seed=seed,
                          resume=resume, tracker=RowLog(log_fn), forward_step_fn=forward_step(handle.device),
                          kind="eagle3", on_step=on_step)
    return throughput(result.metrics, task, real_tokens_per_row(rows), paused)


def measure(handle, *args, **kwargs) -> dict:
    """optmodel.speculative.acceptance.measure on the converted megatron model."""
    from optmodel.speculative import acceptance

    with eagle_scope(handle.model):
        return acceptance.measure(handle.model, *args, **kwargs)


class MegatronEagle3:
    """backend=megatron's EAGLE3 steps (the interface of optmodel.speculative.ops)."""

    def __init__(self, handle):
        self.handle = handle

    @property
    def model(self):
        return self.handle.model

    @property
    def vocab_size(self) -> int:
        return int(self.handle.cfg.model.vocab_size)

    def convert(self, spec, d2t=None, seed: int = 0):
        return convert(self.handle, spec, d2t=d2t, seed=seed)

    def measure(self, tokenizer, prompts: List[str], max_new_tokens: int = 64, draft_steps: int = 7) -> dict:
        return measure(self.handle, tokenizer, prompts, max_new_tokens, draft_steps)

    def fit(self, rows, task, run_dir: Path, seed: int, on_step=None, log_fn=lambda m: None, paused=None, resume=False):
        return fit(self.handle, rows, task, run_dir, seed, on_step, log_fn, paused, resume)

    def fit_offline(self, features_dir: Path, task, run_dir: Path, seed: int, log_fn=lambda m: None,
                    resume: bool = False):
        """The draft trained from an eagle3_features dump (either backend's) in ModelOpt's
        eagle_offline mode: the target's embeddings and output layer only run."""
        from optmodel.speculative import features

        manifest = features.read_manifest(features_dir)
        spec = DraftSpec.from_cfg(task)
        spec.aux_layer_ids = list(manifest["aux_layer_ids"])
        dataset = features.FeaturesDataset(features_dir, dtype=next(self.model.parameters()).dtype)
        d2t = vocab_mapping(task, dataset.rows, self.vocab_size, Path(run_dir) / "draft_vocab")
        convert(self.handle, spec, d2t=d2t, offline=True, seed=seed)
        metrics = fit(self.handle, dataset.rows, task, run_dir, seed, None, log_fn, resume=resume)
        self.model.eval()
        return metrics

    def export_draft(self, out_dir: Path, notes: Optional[Dict[str, dict]] = None, deploy: str = "none") -> Path:
        return export(self.handle, out_dir, notes, deploy)

    def attach(self, draft_dir: Path):
        return attach(self.handle, draft_dir)

    def dump_features(self, rows, out_dir: Path, aux_ids: List[int], shard_size: int, target: str, batch_size: int,
                      data: Optional[dict] = None):
        from optmodel.speculative import features

        m = self.handle.cfg.model
        shape = {"hidden_size": int(m.hidden_size), "num_layers": int(m.num_layers), "vocab_size": int(m.vocab_size)}

        # collective: every rank runs the sharded forward, rank 0 writes
        return features.dump(self.model, rows, out_dir, aux_ids, shard_size, target, batch_size,
                             data=data, hidden_states=lambda batch: target_hidden_states(self.handle, aux_ids, batch),
                             shape=shape, write=is_rank0())


def target_hidden_states(handle, aux_ids: List[int], batch) -> tuple:
    """(final normalized hidden, aux layers' outputs concatenated), [b, s, h] each, as the hf
    dump computes them: forward hooks on the decoder layers and the final norm of the
    target's megatron forward (full causal rows; right padding never reaches earlier positions)."""
    import torch

    model = handle.model
    captured: Dict[int, "torch.Tensor"] = {}

    def keep(key):
        def hook(module, inputs, output):
            captured[key] = (output if isinstance(output, torch.Tensor) else output[0]).detach()
        return hook

    hooks = [layer.register_forward_hook(keep(layer.layer_number - 1)) for layer in model.decoder.layers
             if layer.layer_number - 1 in aux_ids]
    if getattr(model.decoder, "final_layernorm", None) is not None:  # the last pipeline stage's
        hooks.append(model.decoder.final_layernorm.register_forward_hook(keep("final")))
    try:
        handle.logits(batch["input_ids"])
    finally:
        for h in hooks:
            h.remove()
    ids = batch["input_ids"]
    shape = (ids.shape[1], ids.shape[0], int(handle.cfg.model.hidden_size))
    found = {key: from_owning_stage(captured.get(key), shape, next(model.parameters()).dtype)
             for key in [*aux_ids, "final"]}
    # megatron's activations are [s, b, h]
    return (found["final"].transpose(0, 1).contiguous(),
            torch.cat([found[i] for i in aux_ids], dim=-1).transpose(0, 1).contiguous())


def from_owning_stage(tensor, shape, dtype):
    """`tensor` on every pipeline stage, sent by the one stage that computed it (PP 1: as is)."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state

    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return tensor
    group = parallel_state.get_pipeline_model_parallel_group()
    device = tensor.device if tensor is not None else torch.device("cpu")
    flags = [torch.zeros(1, device=device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(flags, torch.ones(1, device=device) if tensor is not None else torch.zeros(1, device=device),
                    group=group)
    owner = dist.get_global_rank(group, next(i for i, f in enumerate(flags) if f.item() > 0))
    buffer = tensor.contiguous() if tensor is not None else torch.empty(shape, dtype=dtype, device=device)
    dist.broadcast(buffer, src=owner, group=group)
    return buffer
