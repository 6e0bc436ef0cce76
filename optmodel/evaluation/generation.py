"""Text generation over a handle's Forward: greedy or sampled, batched with left padding.

A backend with its own KV-cached generation (transformers' `generate`) is used through
`Forward.generate_fn`; any other backend gets the plain loop below, which re-runs the
forward over the whole sequence for each new token (exact, slower).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from tqdm import tqdm

from optmodel.evaluation.forward import Forward


@dataclass
class SamplingOptions:
    max_new_tokens: int = 64
    do_sample: bool = False  # False: greedy
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut


def pad_id(tokenizer) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return value
    return 0


def left_pad(rows: Sequence[Sequence[int]], pad: int, device):
    """[b, L] ids and mask with each row right-aligned (new tokens go at the end)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def next_token(logits, opts: SamplingOptions, generator=None):
    """[b, vocab] logits of the last position -> [b] token ids."""
    import torch

    if not opts.do_sample or opts.temperature <= 0:
        return logits.argmax(-1)
    logits = logits / opts.temperature
    if opts.top_k and opts.top_k > 0:
        kth = torch.topk(logits, min(opts.top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if opts.top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > opts.top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def _loop_generate(forward: Forward, rows, pad: int, opts: SamplingOptions, stop_ids, generator=None):
    import torch

    ids, mask = left_pad(rows, pad, forward.device)
    done = torch.zeros(len(rows), dtype=torch.bool, device=ids.device)
    new = []
    for _ in range(opts.max_new_tokens):
        logits = forward.logits(ids, mask)[:, -1, :]
        tok = next_token(logits, opts, generator)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        new.append(tok)
        ids = torch.cat([ids, tok[:, None]], dim=1)
        mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
        done |= torch.isin(tok, torch.tensor(list(stop_ids) or [-1], device=tok.device))
        if bool(done.all()):
            break
    return torch.stack(new, dim=1) if new else torch.zeros((len(rows), 0), dtype=torch.long)


def generate_ids(forward: Forward, tokenizer, prompts: List[List[int]], opts: SamplingOptions,
                 batch_size: int, stop_token_ids: Sequence[int] = (), generator=None,
                 desc: Optional[str] = "generate") -> List[List[int]]:
    """New token ids for each prompt (prompt token lists), cut after the first stop token."""
    pad = pad_id(tokenizer)
    # A forward without a mask cannot ignore left padding: one prompt at a time there.
    step = batch_size if forward.takes_mask else 1
    out: List[List[int]] = []
    for start in tqdm(range(0, len(prompts), step), desc=desc, unit="batch", disable=desc is None):
        rows = prompts[start:start + step]
        if forward.generate_fn is not None:
            ids, mask = left_pad(rows, pad, forward.device)
            new = forward.generate_fn(ids, mask, opts.max_new_tokens, opts.do_sample and opts.temperature > 0,
                                      opts.temperature, opts.top_p, opts.top_k, stop_token_ids, generator=generator)
        else:
            new = _loop_generate(forward, rows, pad, opts, stop_token_ids, generator)
        for row in new.tolist():
            cut = next((i for i, t in enumerate(row) if t in stop_token_ids), None)
            out.append(row if cut is None else row[:cut])
    return out
