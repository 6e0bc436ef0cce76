"""Acceptance length of an EAGLE draft against its target, greedy.

A measured loop over ModelOpt's `pseudo_speculative_generate` (one target forward giving
the target's next token plus `draft_steps` drafted tokens), with the acceptance rule of
ModelOpt's `AcceptanceRateValidation.validate`: the target's greedy answer is computed
first, each step keeps the drafted tokens that match it, in order, up to the first miss.
(ModelOpt's own class pins tensors to `torch.cuda.current_device()`, so it cannot run on CPU.)

AL = generated tokens / target forward steps, summed over all prompts.
AR = AL / draft steps. per_position[k] = share of target steps whose k-th drafted token
was accepted (so AL = 1 + sum(per_position) up to the answers' ends)."""

from __future__ import annotations

from typing import Dict, List

from tqdm import tqdm

from optmodel.speculative.data import prompt_ids
from optmodel.training.threads import small_model_threads


def greedy_answer(model, input_ids, max_new_tokens: int, eos_id):
    """The target's greedy continuation (through ModelOpt's steps=0 path: target only)."""
    import torch

    ids = input_ids
    for _ in range(max_new_tokens):
        token, _ = model.pseudo_speculative_generate(ids, steps=0)
        ids = torch.cat((ids, token.to(ids.device)), dim=-1)
        if eos_id is not None and int(token[0, 0]) == eos_id:
            break
    return ids


def measure(model, tokenizer, prompts: List[str], max_new_tokens: int = 64, draft_steps: int = 7,
            desc: str = "acceptance") -> Dict[str, object]:
    """A small target decodes on one CPU thread (optmodel.training.threads)."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generated = steps = 0
    accepted_at = [0] * draft_steps
    try:
        with torch.no_grad(), small_model_threads(model):
            for prompt in tqdm(prompts, desc=desc, unit="prompt", leave=False):
                ids = prompt_ids(tokenizer, prompt).to(device)
                truth = greedy_answer(model, ids, max_new_tokens, tokenizer.eos_token_id)
                end = truth.shape[1]
                pos = ids.shape[1]
                while pos < end:
                    steps += 1
                    token, draft = model.pseudo_speculative_generate(truth[:, :pos], steps=draft_steps)
                    pos += 1  # the target's own token always matches its greedy answer
                    for k in range(draft.shape[1]):
                        if pos >= end or int(draft[0, k]) != int(truth[0, pos]):
                            break
                        accepted_at[k] += 1
                        pos += 1
                generated += end - ids.shape[1]
    finally:
        model.train(was_training)
    al = generated / max(steps, 1)
    return {"acceptance_length": al, "acceptance_rate": al / draft_steps,
            "per_position": [a / max(steps, 1) for a in accepted_at],
            "generated_tokens": generated, "target_steps": steps, "prompts": len(prompts),
            "draft_steps": draft_steps}
