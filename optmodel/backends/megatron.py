"""backend=megatron: a megatron-core GPTModel at any parallel layout.

One handle per process holds this rank's piece of the model (its pipeline stage, its
tensor / expert shards). What the tasks call:
- `load(cfg, path)`: parallel state + model, weights imported from a HF checkpoint with
  ModelOpt's importer, or from a Megatron distributed checkpoint;
- `handle.logits(input_ids)`: full-vocabulary logits on every rank, through
  megatron-core's pipeline schedule when PP > 1 (the pipeline is hidden from callers);
- `handle.save(dir)` / `load_distributed(handle, dir)`: weights and the ModelOpt state
  (quantizers) in megatron's distributed checkpoint format;
- `handle.generate_tokens(...)`: greedy / sampled tokens with megatron-core's KV cache
  (optmodel.backends.megatron_generate);
- `handle.export(dir)`: unified HF checkpoint with ModelOpt's exporter (TP=1 only);
- `handle.train(...)`: SFT / KD on megatron-core's schedule and optimizer
  (optmodel.training.megatron).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig
from tqdm import tqdm

from optmodel.backends.handle import ModelHandle
from optmodel.backends.megatron_cpu import causal_mask, tensor_cuda_is_identity
from optmodel.backends.megatron_export import quantizer_summary, write_with_modelopt
from optmodel.backends.megatron_families import import_gpt_oss_bf16, register_import_rules
from optmodel.backends.megatron_generate import generate_tokens
from optmodel.backends.megatron_pipeline import pipeline_broadcast_logits
from optmodel.backends.megatron_spec import build_gpt_model
from optmodel.backends.megatron_world import init_model_parallel
from optmodel.backends.storage import exact_cast
from optmodel.distributed import barrier, is_rank0
from optmodel.facts.checkpoint import resolve_checkpoint
from optmodel.facts.dtype import checkpoint_dtype, compute_dtype
from optmodel.facts.layout import EXPORT_TP_REFUSAL
from optmodel.facts.machine import torch_device
from optmodel.facts.rundir import is_distributed_checkpoint
from optmodel.manifest import atomic_dir
from optmodel.pruning.targets import parameters
from optmodel.speculative.megatron_eagle import MegatronEagle3

log = logging.getLogger("optmodel")

MODEL_DIR = "model"  # the distributed checkpoint inside a saved run output


class MegatronHandle(ModelHandle):
    """This rank's piece of a megatron-core GPTModel (its pipeline stage, its tensor / expert
    shards); `logits`, `save` and `export` are collective: every rank calls them."""

    backend = "megatron"
    takes_mask = False  # full causal sequences: padded batches are scored one row at a time

    @property
    def parallel(self) -> DictConfig:
        return self.cfg.parallel

    @property
    def checkpoint(self) -> Optional[Path]:
        """The HF checkpoint the architecture, tokenizer and export reference come from."""
        return resolve_checkpoint(self.cfg.model)

    def logits(self, input_ids, attention_mask=None):
        """[batch, seq] token ids -> [batch, seq, vocab] logits (fp32), on every rank."""
        return forward_logits(self.model, input_ids, self.device)

    def generate_tokens(self, input_ids, attention_mask, max_new_tokens: int, do_sample: bool, temperature: float,
                        top_p: float, top_k: int, stop_token_ids, generator=None):
        """New tokens through megatron-core's static KV cache (optmodel.backends.megatron_generate)."""
        return generate_tokens(self, input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_p, top_k,
                               stop_token_ids, generator)

    def save(self, out_dir) -> Path:
        return save_distributed(self, out_dir)

    def export(self, out_dir, format: str = "hf", dtype: str = "bfloat16") -> Path:
        return export_hf(self, out_dir, dtype=dtype, format=format)

    def architecture(self) -> dict:
        return architecture_as_loaded(self)

    def quantizer_summary(self) -> dict:
        """Collective: the quantizers of every stage and expert rank, merged by global name."""
        return quantizer_summary(self.model)

    def train(self, training, train_dataset, eval_dataset=None, *, output_dir, seed: int, teacher=None,
              distillation=None, resume: bool = False, tracker=None):
        """megatron-core's schedule, DDP and optimizer; KD through ModelOpt's Megatron plugin
        (optmodel.training.megatron)."""
        from optmodel.training.megatron import fit_megatron

        return fit_megatron(self, training, train_dataset, eval_dataset, output_dir=output_dir, seed=seed,
                            teacher=teacher, distillation=distillation, resume=resume, tracker=tracker)

    def eagle3(self):
        """ModelOpt's Megatron EAGLE on this model, trained by the megatron training core
        (optmodel.speculative.megatron_eagle)."""
        return MegatronEagle3(self)

    def forward_loop(self, batches, batch_size: int = 1, desc: str = "calibrate"):
        """The `forward_loop` of `mtq.quantize(handle.model, cfg, forward_loop)`: every batch
        through the whole model (all stages, all ranks in step).

        `batches`: a [n, seq] LongTensor of token ids (split into `batch_size` rows), or a
        list of {"input_ids": [b, seq], ...} dicts as the quantize task builds them. Padded
        batches are refused: megatron's forward here takes full causal sequences only.
        """
        import torch

        if isinstance(batches, torch.Tensor):
            batches = [batches[i : i + batch_size] for i in range(0, len(batches), batch_size)]

        def loop(model):
            for batch in tqdm(batches, desc=desc, unit="batch"):
                if isinstance(batch, dict):
                    mask = batch.get("attention_mask")
                    if mask is not None and not bool(mask.all()):
                        raise ValueError(
                            "backend=megatron calibrates on full (packed) sequences; this batch is padded. "
                            "Fix: data.packing=pack."
                        )
                    batch = batch["input_ids"]
                self.logits(batch)

        return loop


def build(cfg: DictConfig, device=None, init_weights: bool = True) -> MegatronHandle:
    """Parallel state and this rank's model; no weights read. init_weights=False leaves
    the parameters uninitialized, for callers that fill every one of them next."""
    device = device or torch_device(cfg.backend)
    init_model_parallel(cfg.parallel, device=device.type, seed=int(cfg.run.seed))
    model = build_gpt_model(
        cfg.model,
        cfg.parallel,
        dtype=compute_dtype(cfg.backend, cfg.model, device.type),
        cpu_init=device.type == "cpu" or bool(cfg.backend.cpu_init),
        token_dispatcher=cfg.backend.token_dispatcher,
        init_weights=init_weights,
    )
    if not cfg.backend.cpu_init:
        model.to(device)
    # backend.cpu_init: the weights stay in host memory (convert / export of pipeline
    # stages larger than a GPU); forward passes need them on the GPU.
    model.eval()
    ckpt = resolve_checkpoint(cfg.model)
    return MegatronHandle(model=model, tokenizer=_tokenizer(cfg, ckpt), device=device, source=ckpt, cfg=cfg)


def _tokenizer(cfg: DictConfig, ckpt: Optional[Path]):
    if ckpt is None:
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt, trust_remote_code=bool(cfg.model.trust_remote_code))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load(cfg: DictConfig, path: Optional[os.PathLike] = None, origin: Optional[dict] = None) -> MegatronHandle:
    """Build, then fill the weights from `path`: a distributed checkpoint saved by `save`
    (ModelOpt state included), or a HF checkpoint dir (default: the model's checkpoint)."""
    # Every parameter is overwritten next: skip the random init (minutes per stage of a
    # 1T-parameter model).
    handle = build(cfg, init_weights=False)
    handle.origin = origin
    if path is not None and is_distributed_checkpoint(Path(path)):
        # Restoring the ModelOpt state calibrates quantizers on the weights present before
        # the checkpoint is read: zeros (a memset), not uninitialized memory that may hold NaN.
        for param in handle.model.parameters():
            param.data.zero_()
        load_distributed(handle, path)
    else:
        import_hf(handle, path)
    handle.source = Path(path) if path is not None else handle.checkpoint
    return handle


def import_hf(handle: MegatronHandle, hf_dir: Optional[os.PathLike] = None) -> None:
    """HF safetensors -> this rank's shards (ModelOpt's importer; reads only what it needs)."""
    import torch
    from modelopt.torch.export import import_mcore_gpt_from_hf

    register_import_rules()  # the text-only Llama-4 checkpoint (Llama4ForCausalLM)
    hf_dir = Path(hf_dir or handle.checkpoint)
    log.info("importing %s into megatron-core (TP %d, PP %d, EP %d)", hf_dir, handle.parallel.tensor,
             handle.parallel.pipeline, handle.parallel.expert)
    dtype = getattr(torch, compute_dtype(handle.cfg.backend, handle.cfg.model, handle.device.type))
    router_dtype = handle.cfg.model.moe.router_dtype if handle.cfg.model.moe is not None else None
    # the importer re-ties embeddings at PP > 1 (setup_embeddings_and_output_layer)
    with tensor_cuda_is_identity():
        if handle.cfg.model.family == "gpt_oss":
            import_gpt_oss_bf16(handle.model, str(hf_dir), dtype=dtype, moe_router_dtype=router_dtype)
            return
        import_mcore_gpt_from_hf(
            handle.model,
            str(hf_dir),
            dtype=dtype,
            trust_remote_code=bool(handle.cfg.model.trust_remote_code),
            moe_router_dtype=router_dtype,
        )


def _stage_forward(model, input_ids, device):
    import torch

    ids = input_ids.to(device)
    positions = torch.arange(ids.shape[1], device=device).unsqueeze(0).expand_as(ids)
    return model(ids, positions, attention_mask=causal_mask(ids.shape[1], device))


def forward_logits(model, input_ids, device):
    """Full logits on every rank; PP > 1 runs megatron-core's forward-only pipeline schedule."""
    import torch
    from megatron.core import parallel_state

    with torch.no_grad():
        if parallel_state.get_pipeline_model_parallel_world_size() == 1:
            return _stage_forward(model, input_ids, device).float()
        return pipeline_broadcast_logits(model, input_ids, device, lambda stage, ids: _stage_forward(stage, ids, device))


def stage_layers(model) -> list:
    """Global (0-based) indices of the decoder layers this rank holds."""
    return [layer.layer_number - 1 for layer in model.decoder.layers]


def save_distributed(handle: MegatronHandle, out_dir: os.PathLike) -> Path:
    """Weights + ModelOpt state as a megatron distributed checkpoint in `out_dir`.

    Every rank writes its shards into one partial dir that rank 0 renames when all ranks
    are done (`atomic_dir`), so an interrupted save never leaves a directory named `out_dir`.
    """
    from megatron.core import dist_checkpointing
    from modelopt.torch.opt.plugins.mcore_dist_checkpointing import save_sharded_modelopt_state

    with atomic_dir(out_dir, all_ranks=True) as partial:
        save_sharded_modelopt_state([handle.model], str(partial))
        stored = checkpoint_dtype(handle.cfg.model, handle.checkpoint)
        dist_checkpointing.save(stored_sharded_state_dict(handle.model.sharded_state_dict(), stored), str(partial))
    return Path(out_dir)


def stored_sharded_state_dict(sharded, dtype_name: str):
    """The checkpoint's dtype for every floating tensor that casts to it exactly (a float32 copy
    of bf16 weights: half the bytes, the same values on reload); others as they are."""
    import torch
    from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    target = getattr(torch, dtype_name)

    def cast(item):
        data = getattr(item, "data", None)
        if (isinstance(item, (ShardedTensor, ShardedTensorFactory)) and isinstance(data, torch.Tensor)
                and data.is_floating_point() and data.dtype != target):
            narrow = exact_cast(data, target)
            if narrow is not None:
                item.data = narrow  # a factory (fused QKV / gate-up) builds its shards from this
                if isinstance(item, ShardedTensor):
                    item.dtype = target
        return item

    return dict_list_map_inplace(cast, sharded)


def load_distributed(handle: MegatronHandle, ckpt_dir: os.PathLike) -> None:
    """Restore a `save_distributed` checkpoint into a freshly built handle (same or other
    layout: megatron's distributed checkpoints reshard on load), ModelOpt state first so
    that quantizers exist before their amax values are read."""
    from megatron.core import dist_checkpointing
    from modelopt.torch.opt.plugins.mcore_dist_checkpointing import restore_sharded_modelopt_state

    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "metadata.json").is_file():
        raise FileNotFoundError(f"{ckpt_dir} is not a megatron distributed checkpoint (no metadata.json)")
    restore_sharded_modelopt_state([handle.model], str(ckpt_dir))
    state = dist_checkpointing.load(handle.model.sharded_state_dict(), str(ckpt_dir))
    handle.model.load_state_dict(state)


def export_hf(handle: MegatronHandle, export_dir: os.PathLike, dtype: str = "bfloat16", format: str = "hf") -> Path:
    """Unified HF checkpoint (config.json, safetensors, hf_quant_config.json when quantized),
    or vLLM's fake-quant layout (format vllm_fq); see optmodel.backends.megatron_export."""
    if handle.parallel.tensor != 1:  # validation refuses it first; a direct caller gets the reason too
        raise ValueError(EXPORT_TP_REFUSAL)
    with atomic_dir(export_dir, all_ranks=True) as partial:
        write_with_modelopt(handle, partial, dtype, format)
        barrier()  # every stage's layers are written before rank 0 tidies the folder
        if is_rank0():
            remove_index_fragments(partial)
            if handle.tokenizer is not None:
                handle.tokenizer.save_pretrained(partial)
    return Path(export_dir)


def remove_index_fragments(export_dir: Path) -> None:
    """ModelOpt's megatron exporter writes one shard per decoder layer plus a
    `model-000NN-of-000MM.json` weight-map fragment per shard, which it merges into
    model.safetensors.index.json; the fragments are not part of a HF checkpoint."""
    import re

    for path in Path(export_dir).glob("model-*-of-*.json"):
        if re.fullmatch(r"model-\d{5}-of-\d{5}\.json", path.name):
            path.unlink()


def architecture_as_loaded(handle: MegatronHandle) -> dict:
    """What a later run inherits, in ModelConfig field names: the global shape (not per
    rank) megatron built, and this rank's parameter count."""
    from omegaconf import OmegaConf

    built = handle.model.config
    arch = OmegaConf.to_container(handle.cfg.model, resolve=True)
    for key in ("name", "checkpoint", "tiny", "trust_remote_code", "dtype"):
        arch.pop(key, None)
    arch.update(num_layers=built.num_layers, hidden_size=built.hidden_size, ffn_hidden_size=built.ffn_hidden_size,
                num_attention_heads=built.num_attention_heads)
    if arch.get("moe"):  # what pruning may have changed
        arch["moe"].update(num_experts=built.num_moe_experts, ffn_hidden_size=built.moe_ffn_hidden_size)
        if arch["moe"].get("shared_expert_ffn_hidden_size"):
            arch["moe"]["shared_expert_ffn_hidden_size"] = built.moe_shared_expert_intermediate_size
    arch["parameters"], arch["active_parameters"] = parameters(arch)  # of the whole model (all ranks)
    arch["parameters_this_rank"] = sum(p.numel() for p in handle.model.parameters())
    return arch


def train_eagle3_offline(cfg: DictConfig, load_target, features_dir: Path, run_dir: Path, log_fn):
    """ModelOpt's Megatron EAGLE in eagle_offline mode on the loaded target (sharded over TP)."""
    ops = load_target().eagle3()
    return ops, ops.fit_offline(features_dir, cfg.task, run_dir, int(cfg.run.seed), log_fn, bool(cfg.run.get("resume")))
