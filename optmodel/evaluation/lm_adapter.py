"""An lm-eval `LM` over optmodel's model handle, for any backend.

Tokenization follows lm-eval's `TemplateLM` (the same context / continuation split as its
`hf` model type); scoring calls only `Forward.logits_chunks` at the positions it needs (MMLU: the last one),
batched with left padding and an attention mask (or right padding where the backend's forward takes no mask, which is exact
under causal attention). Identical inputs are run once: a multiple-choice question whose
choices are single tokens (MMLU's A/B/C/D) costs one forward, not four.

Model-parallel runs: every rank must run every forward (the pipeline spans the ranks), so
the adapter presents one process to lm-eval on each rank (rank 0, world size 1: no request
splitting) and the caller reports from global rank 0 only.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Dict, List, Tuple

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from optmodel.evaluation.forward import handle_forward
from optmodel.evaluation.generation import SamplingOptions, generate_ids, left_pad, pad_id


class OptmodelLM(TemplateLM):
    def __init__(self, handle, batch_size: int = 8, max_gen_toks: int = 256):
        super().__init__()
        self.forward = handle_forward(handle)
        self.tokenizer = handle.tokenizer
        self.batch_size = int(batch_size)
        self.max_gen_toks = int(max_gen_toks)
        self._device = self.forward.device

    # --- tokenization, as lm-eval's hf model type does it ---------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self.forward.max_length

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "optmodel")).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens=None, left_truncate_len=None, **kwargs) -> List[int]:
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        bos = self.tokenizer.bos_token
        if add_special_tokens is None and bos and string.startswith(bos):
            special = {"add_special_tokens": False}  # the text already carries its BOS
        ids = self.tokenizer.encode(string, **special)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def chat_template(self, chat_template=False):
        return getattr(self.tokenizer, "chat_template", None) if chat_template else None

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # --- scoring --------------------------------------------------------------------------
    def _score_batch(self, rows: List[Tuple[int, ...]], wanted: List[List[Tuple[int, List[int]]]]):
        """Scores of `wanted[i]` = [(request index, continuation ids)] against row i: the sum of
        the continuation's log-probs at the row's last len(continuation) positions, and whether
        each is the greedy token. Only those positions are scored, one block of logits at a time
        (`Forward.logits_chunks`), log-softmax in float32 per block."""
        import torch

        pad = pad_id(self.tokenizer)
        if self.forward.takes_mask:  # left padding: each row right-aligned
            ids, mask = left_pad(rows, pad, self.device)
        else:  # no mask: right padding, which causal attention never sees from real tokens
            width = max(len(r) for r in rows)
            ids = torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows], device=self.device)
            mask = None
        width = ids.shape[1]
        spans = {}  # request index -> (row, first padded position, continuation tensor)
        for i, (row, requests) in enumerate(zip(rows, wanted)):
            end = width if mask is not None else len(row)
            for index, cont in requests:
                spans[index] = (i, end - len(cont), torch.tensor(cont, device=self.device))
        totals = {index: 0.0 for index in spans}
        greedy = {index: True for index in spans}
        start = min(lo for _, lo, _ in spans.values())
        stop = max(lo + len(cont) for _, lo, cont in spans.values())
        for rows_slice, first, block in self.forward.logits_chunks(ids, mask, start, stop):
            logprobs = torch.log_softmax(block, dim=-1)
            last = first + block.shape[1]
            for index, (i, lo, cont) in spans.items():
                a, b = max(lo, first), min(lo + len(cont), last)
                if not (rows_slice.start <= i < rows_slice.stop) or a >= b:
                    continue
                part = logprobs[i - rows_slice.start, a - first:b - first]
                target = cont[a - lo:b - lo]
                totals[index] += float(part.gather(-1, target[:, None]).sum())
                greedy[index] = greedy[index] and bool((part.argmax(-1) == target).all())
            del logprobs, block
        return {index: (totals[index], greedy[index]) for index in spans}

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> List[Tuple[float, bool]]:
        # The model reads context + continuation minus its last token, left-truncated to
        # max_length; the continuation's log-probs sit at the last len(continuation) positions.
        users: Dict[Tuple[int, ...], List[int]] = defaultdict(list)  # distinct input -> its requests
        for index, (_, context_enc, continuation_enc) in enumerate(requests):
            whole = (list(context_enc) + list(continuation_enc))[-(self.max_length + 1):]
            users[tuple(whole[:-1])].append(index)
        inputs = sorted(users, key=lambda row: (-len(row), row))  # longest first: batches pad little
        results: List[Tuple[float, bool]] = [None] * len(requests)  # type: ignore[list-item]
        for start in tqdm(range(0, len(inputs), self.batch_size), desc="loglikelihood", unit="batch",
                          disable=disable_tqdm):
            rows = inputs[start:start + self.batch_size]
            wanted = [[(index, list(requests[index][2])) for index in users[row]] for row in rows]
            for index, answer in self._score_batch(rows, wanted).items():  # scored now: no logits kept
                results[index] = answer
                if requests[index][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> List[float]:
        windows, owners = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1,
            )):
                windows.append((None, context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[owner] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # --- generation -----------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        groups: Dict[str, List[int]] = defaultdict(list)  # same generation options batch together
        for index, req in enumerate(requests):
            groups[json.dumps(req.args[1], sort_keys=True, default=str)].append(index)
        results: List[str] = [""] * len(requests)
        eos_text = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        for key, indices in groups.items():
            # lm-eval's own reading of the options (max-token aliases, do_sample vs temperature)
            kwargs = normalize_gen_kwargs(json.loads(key), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.get("until"), eos=eos_text or None)
            max_new = int(kwargs["max_gen_toks"])
            temperature = float(kwargs.get("temperature") or 0.0)
            opts = SamplingOptions(
                max_new_tokens=max_new,
                do_sample=bool(kwargs.get("do_sample")),
                temperature=temperature if temperature > 0 else 1.0,  # sampling with no temperature: 1
                top_p=float(kwargs.get("top_p") or 1.0),
                top_k=int(kwargs.get("top_k") or 0),
            )
            max_ctx = max(1, self.max_length - max_new)
            prompts = [self.tok_encode(requests[i].args[0], left_truncate_len=max_ctx) for i in indices]
            new_ids = generate_ids(self.forward, self.tokenizer, prompts, opts, self.batch_size,
                                   stop_token_ids=[self.eot_token_id], desc=None if disable_tqdm else "generate_until")
            for i, ids in zip(indices, new_ids):
                text = self.tok_decode(ids)
                for stop in until:  # cut at the first stop sequence, as lm-eval's models do
                    if stop:
                        text = text.split(stop)[0]
                results[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return results
