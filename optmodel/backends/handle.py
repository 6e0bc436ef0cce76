"""The model-handle contract: what every task may ask of the run's model, on any backend.

    handle.logits(input_ids, attention_mask=None)  -> [batch, seq, vocab] float32, every rank
    handle.logits_chunks(ids, mask, start, stop)   -> (rows, first position, float32 block) over positions
                                                      [start, stop): scorers never hold whole logits
    handle.forward_loop(batches, desc)             -> fn(model) running every batch (calibration, scoring)
    handle.generate(prompts, max_new_tokens, ...)  -> completions (str), greedy or sampled
    handle.generate_tokens(ids, mask, ...)         -> new token ids (KV-cached where the backend has it)
    handle.save(dir)                               -> restorable model (weights + ModelOpt state)
    handle.export(dir, format, dtype)              -> deployable checkpoint
    handle.architecture()                          -> the shape as produced, in ModelConfig field names
    handle.quantizer_summary()                     -> formats, quantizer counts, effective bits of the whole model
    handle.train(training, train, held, ...)       -> FitResult; the handle holds the trained model after
    handle.eagle3()                                -> this backend's EAGLE3 steps on the model (convert, fit,
                                                      measure, export_draft, attach: optmodel.speculative.ops)

Collective methods (logits, save, export on a multi-rank world) are called by every rank
with the same arguments; the handle decides which rank writes, and writes atomically.
Tasks never ask which backend they run on: what one backend cannot do is refused at
validation (the task's spec, optmodel/tasks/<name>/spec.py), not branched on in a task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from optmodel.evaluation.forward import handle_forward
from optmodel.quantization.summary import quantizer_summary


class ModelHandle:
    """Base of the backends' handles. Subclasses set the attributes and implement logits,
    forward_loop, save, export and architecture."""

    backend: str = "?"
    takes_mask: bool = True  # False: logits ignore attention_mask (callers batch unpadded rows only)

    def __init__(self, model, tokenizer, device, source: Optional[Path], cfg, origin: Optional[Dict[str, Any]] = None):
        self.model = model  # a task may replace it (handle.model = pruned model)
        self.tokenizer = tokenizer
        self.device = device
        self.source = source  # the checkpoint dir or saved model it was loaded from
        self.cfg = cfg  # the run config (model section: the architecture this handle holds)
        self.origin = origin  # manifest of the run dir it was loaded from, or None
        self.changed_by: List[str] = []  # pipeline steps that changed the model since it was loaded

    def provenance(self, loaded_from: Optional[str] = None) -> str:
        """What the model is, for a summary: the run dir it was loaded from (`loaded_from`) or its
        source, then the pipeline steps that have changed it in memory since."""
        where = str(loaded_from or self.source)
        return f"{where} after {' -> '.join(self.changed_by)} (this pipeline)" if self.changed_by else where

    # --- forward --------------------------------------------------------------------------
    def logits(self, input_ids, attention_mask=None):
        raise NotImplementedError

    def logits_chunks(self, input_ids, attention_mask=None, start: int = 0, stop: Optional[int] = None,
                      max_elements: Optional[int] = None) -> Iterator[Tuple[slice, int, Any]]:
        """Logits of positions [start, stop) of every row as (rows, first position, [rows, k,
        vocab] float32) blocks of at most `max_elements` floats (default
        optmodel.metrics.LOGITS_CHUNK_ELEMENTS); collective like `logits`. This fallback runs
        whole-logits forwards over as few rows at a time as fit the budget (one row at least);
        a backend that can apply its output layer separately overrides it."""
        from optmodel.metrics import LOGITS_CHUNK_ELEMENTS, logit_blocks

        budget = max_elements or LOGITS_CHUNK_ELEMENTS
        batch, seq = input_ids.shape
        vocab = int(getattr(self.model, "vocab_size", None) or self.cfg.model.get("padded_vocab_size")
                    or self.cfg.model.vocab_size)
        rows = max(1, min(batch, budget // max(1, seq * vocab)))
        for r in range(0, batch, rows):
            mask = None if attention_mask is None else attention_mask[r:r + rows]
            logits = self.logits(input_ids[r:r + rows], mask)
            for sub, first, block in logit_blocks(logits, start, stop, budget):
                yield slice(r + sub.start, r + sub.stop), first, block
            del logits

    def forward_loop(self, batches, desc: str = "calibrate") -> Callable:
        raise NotImplementedError

    @property
    def max_length(self) -> int:
        """Longest sequence the model takes."""
        value = self.cfg.model.get("max_position_embeddings")
        return int(value) if value else 2048

    # --- generation -----------------------------------------------------------------------
    # (ids, mask, max_new_tokens, do_sample, temperature, top_p, top_k, stop_ids, generator=None); collective
    generate_tokens: Optional[Callable] = None

    def generate(self, prompts: List[str], max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, batch_size: int = 8, seed: int = 1234,
                 chat_template: bool = False, desc: Optional[str] = "generate") -> List[str]:
        """Completions of `prompts` (text without the prompt), cut at the end-of-sequence token."""
        return [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in self.generate_ids(
            prompts, max_new_tokens, do_sample, temperature, top_p, top_k, batch_size, seed, chat_template, desc)[1]]

    def generate_ids(self, prompts, max_new_tokens=64, do_sample=False, temperature=1.0, top_p=1.0, top_k=0,
                     batch_size=8, seed=1234, chat_template=False, desc="generate"):
        """(prompt token ids, new token ids) per prompt."""
        import torch

        from optmodel.evaluation.generation import SamplingOptions, generate_ids

        tok = self.tokenizer
        if chat_template:
            texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                     for p in prompts]
        else:
            texts = list(prompts)
        ids = [tok.encode(t, add_special_tokens=not chat_template) for t in texts]
        opts = SamplingOptions(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                               top_p=top_p, top_k=top_k)
        forward = handle_forward(self)
        generator = torch.Generator(device=forward.device).manual_seed(seed)
        new = generate_ids(forward, tok, ids, opts, batch_size, stop_token_ids=[tok.eos_token_id],
                           generator=generator, desc=desc)
        return ids, new

    # --- training -------------------------------------------------------------------------
    def train(self, training, train_dataset, eval_dataset=None, *, output_dir, seed: int, teacher=None,
              distillation=None, resume: bool = False, tracker=None):
        """Train this model per `training` (a TrainingConfig node) on SFT datasets; with
        `teacher` (a handle of the same backend) distill per `distillation`. Collective.
        Returns optmodel.training.loop.FitResult; `self.model` is the trained model after."""
        raise NotImplementedError

    # --- EAGLE3 ---------------------------------------------------------------------------
    def eagle3(self):
        """This backend's EAGLE3 steps on this handle's model (optmodel.speculative.ops)."""
        raise NotImplementedError

    # --- persistence ----------------------------------------------------------------------
    def save(self, out_dir) -> Path:
        raise NotImplementedError

    def export(self, out_dir, format: str = "hf", dtype: str = "bfloat16") -> Path:
        raise NotImplementedError

    def architecture(self) -> Dict[str, Any]:
        raise NotImplementedError

    def quantizer_summary(self) -> Dict[str, Any]:
        """optmodel.quantization.summary's record of the whole model (collective: a backend
        whose ranks hold pieces merges them)."""
        return quantizer_summary(self.model)

    def is_quantized(self) -> bool:
        from modelopt.torch.quantization.nn import TensorQuantizer

        return any(isinstance(m, TensorQuantizer) for m in self.model.modules())
