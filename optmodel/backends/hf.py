"""backend=hf: a Hugging Face transformers model in one process, on CPU or one GPU.

Persistence: `save` writes `save_pretrained` with ModelOpt's HF checkpointing on, so a
quantized model's weights (as calibrated: SmoothQuant / AWQ scales folded where ModelOpt
folds them) and quantizer state (formats, amax, pre-quant scales) reload exactly; `export`
writes a unified HF checkpoint (`hf_quant_config.json`, real low-bit weights and scales) for
TensorRT-LLM / vLLM / SGLang, or vLLM's fake-quant layout (`vllm_fq`). In a multi-rank world
every rank holds the whole model and rank 0 writes. Every directory is written under a
partial name and renamed when complete.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import DictConfig

from optmodel.backends.handle import ModelHandle
from optmodel.backends.storage import shard_size_like, stored_state_dict, write_stored_dtype
from optmodel.config.family_checks import attention_implementation
from optmodel.distributed import barrier, is_rank0
from optmodel.facts.checkpoint import resolve_checkpoint
from optmodel.facts.dtype import checkpoint_dtype, compute_dtype
from optmodel.facts.hf_config import from_hf_config_dict
from optmodel.facts.machine import torch_device
from optmodel.manifest import atomic_dir
from optmodel.quantization import cpu_fakequant
from optmodel.speculative import workflow
from optmodel.speculative.ops import HFEagle3

log = logging.getLogger("optmodel")

MODELOPT_STATE_FILE = "modelopt_state.pth"  # what ModelOpt's HF checkpointing writes beside the weights


class HFHandle(ModelHandle):
    backend = "hf"
    takes_mask = True

    def eagle3(self):
        """ModelOpt's HF EAGLE plugin and transformers' Trainer (optmodel.speculative.ops)."""
        return HFEagle3(self.model)

    # --- forward --------------------------------------------------------------------------
    def logits(self, input_ids, attention_mask=None):
        """Left-padded rows get the positions they would have unpadded, so a batched row
        scores exactly as it does alone."""
        import torch

        with torch.no_grad():
            if attention_mask is None:
                return self.model(input_ids=input_ids).logits.float()
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
            return out.logits.float()

    def logits_chunks(self, input_ids, attention_mask=None, start: int = 0, stop: Optional[int] = None,
                      max_elements: Optional[int] = None):
        """The decoder runs once; the output layer runs per block of positions, so at most one
        block of logits (`max_elements` floats) exists at a time."""
        import torch

        from optmodel.metrics import LOGITS_CHUNK_ELEMENTS

        split = _decoder_and_head(self.model)
        if split is None:  # an output with extra transforms (soft-capping, scaling): whole logits per row group
            yield from super().logits_chunks(input_ids, attention_mask, start, stop, max_elements)
            return
        decoder, head = split
        budget = max_elements or LOGITS_CHUNK_ELEMENTS
        with torch.no_grad():
            kwargs = dict(input_ids=input_ids, use_cache=False)
            if attention_mask is not None:  # same positions as `logits` gives left-padded rows
                kwargs.update(attention_mask=attention_mask,
                              position_ids=(attention_mask.long().cumsum(-1) - 1).clamp(min=0))
            hidden = decoder(**kwargs).last_hidden_state
            batch, seq = input_ids.shape
            stop = seq if stop is None else stop
            vocab = head.weight.shape[0]
            rows = max(1, min(batch, budget // vocab))
            cols = max(1, budget // (rows * vocab))
            for r in range(0, batch, rows):
                for c in range(start, stop, cols):
                    yield slice(r, min(batch, r + rows)), c, head(hidden[r:r + rows, c:min(stop, c + cols)]).float()

    def forward_loop(self, batches, desc: str = "calibrate"):
        """fn(model): every batch ({"input_ids", "attention_mask"?} dicts or [b, seq] id tensors)
        through `model` without gradients, on this handle's device."""
        import torch
        from tqdm import tqdm

        def loop(model):
            # Calibration and importance hooks read the layers, not the logits: the output layer runs on
            # the last position only (a [batch, seq, vocab] float tensor per batch otherwise: 1.2 GB for
            # Qwen3's vocabulary at [8, 256]). Quantizer configs leave lm_head unquantized.
            import inspect

            extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
            with torch.no_grad():
                for batch in tqdm(batches, desc=desc, unit="batch"):
                    if isinstance(batch, dict):
                        model(**{k: v.to(self.device) for k, v in batch.items()}, **extra)
                    else:
                        model(input_ids=batch.to(self.device), **extra)

        return loop

    def generate_tokens(self, input_ids, attention_mask, max_new_tokens: int, do_sample: bool, temperature: float,
                        top_p: float, top_k: int, stop_token_ids, generator=None):
        """Batched generation with transformers' KV cache: left-padded prompts in, new tokens out.
        Sampling draws from torch's global RNG (seeded by run.seed): `generate` takes no generator."""
        import torch

        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=self.tokenizer.pad_token_id,
                      eos_token_id=list(stop_token_ids) or None)
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
        else:  # greedy: clear the checkpoint's sampling defaults so transformers does not warn
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return out[:, input_ids.shape[1]:]

    @property
    def max_length(self) -> int:
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else super().max_length

    def train(self, training, train_dataset, eval_dataset=None, *, output_dir, seed: int, teacher=None,
              distillation=None, resume: bool = False, tracker=None):
        """transformers' Trainer through ModelOpt's trainers (optmodel.training.loop.fit)."""
        from optmodel.training.loop import fit

        result = fit(self.model, training, train_dataset, eval_dataset, output_dir=output_dir, seed=seed,
                     teacher=teacher.model if teacher is not None else None, distillation=distillation,
                     resume=resume, tracker=tracker)
        self.model = result.model
        return result

    # --- persistence ----------------------------------------------------------------------
    def save(self, out_dir) -> Path:
        """Restorable copy: weights, ModelOpt state (when quantized), tokenizer and chat template.
        Weights are stored in the checkpoint's dtype wherever that is exact (a float32 compute
        copy of bf16 weights casts back bit for bit; weights a quantizer folded scales into keep
        the compute dtype, so the copy reloads as measured) and sharded like the input."""
        import modelopt.torch.opt as mto

        final = Path(out_dir)
        if is_rank0():
            mto.enable_huggingface_checkpointing()
            stored = checkpoint_dtype(self.cfg.model, self.source)
            with atomic_dir(final) as partial:
                # save_original_format=False: transformers 5 would otherwise split fused MoE experts back
                # into per-expert tensors and trip over the per-expert quantizer buffers; reloading the
                # fused layout is what from_pretrained does anyway.
                self.model.save_pretrained(partial, save_original_format=False,
                                           state_dict=stored_state_dict(self.model, stored),
                                           max_shard_size=shard_size_like(self.source))
                write_stored_dtype(partial, stored)
                self.tokenizer.save_pretrained(partial)
        barrier()
        return final

    def export(self, out_dir, format: str = "hf", dtype: str = "bfloat16") -> Path:
        """A deployable checkpoint in `format` (hf | vllm_fq) and `dtype`. The model is cast to
        `dtype` first (export is the last step: nothing measures the cast model afterwards)."""
        import torch

        final = Path(out_dir)
        torch_dtype = getattr(torch, dtype)
        # The exporter converts quantized layers only and leaves the rest (embeddings, norms,
        # lm_head) in the compute dtype: cast the whole model, as if loaded in the export dtype.
        self.model.to(torch_dtype)
        self.model.config.dtype = torch_dtype
        if is_rank0():
            with atomic_dir(final) as partial, torch.inference_mode():
                if format == "hf":
                    from modelopt.torch.export import export_hf_checkpoint

                    export_hf_checkpoint(self.model, dtype=torch_dtype, export_dir=partial)
                else:
                    from modelopt.torch.export.plugins.vllm_fakequant_hf import export_hf_vllm_fq_checkpoint

                    export_hf_vllm_fq_checkpoint(self.model, export_dir=partial)
                self.tokenizer.save_pretrained(partial)  # tokenizer files and chat template travel with the weights
        barrier()
        return final

    def architecture(self) -> Dict[str, Any]:
        """The shape of the live model in ModelConfig field names, with parameter counts."""
        arch = from_hf_config_dict(self.model.config.to_dict())
        arch["parameters"] = sum(p.numel() for p in self.model.parameters())
        arch["active_parameters"] = active_parameters(self.model, arch.get("moe"))
        return arch


# Output-layer transforms `_decoder_and_head` cannot reproduce: those models get whole logits per row group.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _decoder_and_head(model):
    """(decoder returning the final-normed hidden states, output layer) of a causal LM whose
    logits are exactly `head(decoder(...).last_hidden_state)`, else None."""
    config = getattr(model, "config", None)
    if config is None or any(getattr(config, name, None) for name in _LOGIT_TRANSFORMS):
        return None
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or decoder is model or head is None or not hasattr(head, "weight"):
        return None
    return decoder, head


def active_parameters(model, moe: Optional[dict]) -> int:
    """Parameters one token uses: routed experts count top_k of num_experts."""
    total = sum(p.numel() for p in model.parameters())
    if not moe:
        return total
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)  # fused or per-expert tensors
    return total - routed + routed * moe["top_k"] // moe["num_experts"]


def load(cfg: DictConfig, path: Optional[Path] = None, origin: Optional[dict] = None) -> HFHandle:
    """Model and tokenizer from a HF checkpoint dir or a run's saved model (default: the
    model's checkpoint); the ModelOpt state (quantizers) is restored when the dir holds one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path) if path is not None else resolve_checkpoint(cfg.model)
    device = torch_device(cfg.backend)
    dtype_name = compute_dtype(cfg.backend, cfg.model, device.type, path)
    dtype = getattr(torch, dtype_name)
    remote = bool(cfg.model.trust_remote_code)  # only when the model config opts in
    quantized = (Path(path) / MODELOPT_STATE_FILE).is_file()
    log.info("loading %s%s from %s (%s on %s)", "quantized " if quantized else "", cfg.model.name, path,
             dtype_name, device)
    if quantized:
        import modelopt.torch.opt as mto

        cpu_fakequant.register()  # quantizers saved by a CPU run name the CPU block backend
        mto.enable_huggingface_checkpointing()
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        trust_remote_code=remote,
        attn_implementation=attention_implementation(cfg.backend, cfg.model),
        device_map=str(device) if device.type == "cuda" and not quantized else None,
    )
    model.to(device).eval()
    if quantized and device.type == "cuda":
        cpu_fakequant.use_native_kernels(model)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return HFHandle(model=model, tokenizer=tokenizer, device=device, source=Path(path), cfg=cfg, origin=origin)


def train_eagle3_offline(cfg: DictConfig, load_target, features_dir: Path, run_dir: Path, log_fn):
    """ModelOpt's eagle_offline mode over the target's embeddings and LM head (FakeBaseModel)."""
    from optmodel.speculative.features import read_manifest

    model, metrics = workflow.offline(read_manifest(features_dir)["target"], features_dir, cfg.task, run_dir,
                                      cfg.backend, int(cfg.run.seed), log_fn, bool(cfg.run.get("resume")))
    return HFEagle3(model), metrics
