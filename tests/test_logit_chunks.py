"""Scoring in blocks of logits (perplexity, lm-eval log-likelihoods): the same numbers as
whole-logits scoring computed here independently, and no logits tensor larger than the block
budget ever produced by the output layer. Real transformers on the bundled tiny models."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import compose_cfg

BUDGET = 3000  # floats per block: a few positions of the tiny vocabulary, so every scorer must chunk


@pytest.fixture(scope="module", params=["tiny_qwen3", "tiny_qwen3_moe"])
def handle(request):
    from optmodel.backends import hf

    return hf.load(compose_cfg(f"model={request.param}"))


@pytest.fixture
def small_blocks(monkeypatch):
    import optmodel.metrics

    monkeypatch.setattr(optmodel.metrics, "LOGITS_CHUNK_ELEMENTS", BUDGET)


@pytest.fixture
def largest_logits(handle):
    """Largest tensor the output layer returns while the test runs (its numel)."""
    seen = [0]
    hook = handle.model.get_output_embeddings().register_forward_hook(
        lambda _m, _i, out: seen.__setitem__(0, max(seen[0], out.numel())))
    yield seen
    hook.remove()


def sequences(handle, n=6, seq=40):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, handle.tokenizer.vocab_size, (n, seq), generator=generator)


def whole_logits_perplexity(model, seqs, batch_size):
    """The formula scoring used before blocks: whole [b, s, vocab] logits, one cross-entropy."""
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(seqs), batch_size):
            batch = seqs[s:s + batch_size]
            logits = model(input_ids=batch).logits.float()
            nll += torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                     batch[:, 1:].reshape(-1), reduction="sum").item()
            count += batch[:, 1:].numel()
    return math.exp(nll / count)


def test_chunked_perplexity_equals_whole_logits_and_stays_in_budget(handle, small_blocks, largest_logits):
    from optmodel.evaluation.perplexity import handle_perplexity

    seqs = sequences(handle)
    expected = whole_logits_perplexity(handle.model, seqs, 4)
    largest_logits[0] = 0
    ours = handle_perplexity(handle, seqs, 4)
    assert ours == pytest.approx(expected, rel=1e-6)
    vocab = handle.model.config.vocab_size
    assert largest_logits[0] <= max(BUDGET, vocab)  # one position of one row at least
    assert largest_logits[0] < 4 * 40 * vocab / 10  # far below one whole batch of logits


def test_row_group_fallback_equals_whole_logits(handle, small_blocks):
    """The base-class path (megatron's): whole logits per group of rows, scored per block."""
    from optmodel.backends.handle import ModelHandle
    from optmodel.metrics import chunked_perplexity

    seqs = sequences(handle, n=4, seq=24)
    chunks = lambda batch, stop: ModelHandle.logits_chunks(handle, batch, None, 0, stop)  # noqa: E731
    assert chunked_perplexity(chunks, seqs, 4, handle.device) == pytest.approx(
        whole_logits_perplexity(handle.model, seqs, 4), rel=1e-6)


def test_adapter_loglikelihoods_equal_whole_logits(handle, small_blocks, largest_logits):
    """Contexts and continuations of different lengths in one batch (left padding), multi-token
    continuations spanning several blocks: sums and greedy flags as from whole logits."""
    from optmodel.evaluation.lm_adapter import OptmodelLM

    g = torch.Generator().manual_seed(1)
    vocab = handle.tokenizer.vocab_size
    reqs = []
    for ctx_len, cont_len in [(12, 1), (30, 5), (7, 3), (30, 1), (20, 9)]:
        ctx = torch.randint(1, vocab, (ctx_len,), generator=g).tolist()
        cont = torch.randint(1, vocab, (cont_len,), generator=g).tolist()
        reqs.append((None, ctx, cont))
    # one request whose continuation is the greedy one: its flag must come out True
    ctx = torch.randint(1, vocab, (10,), generator=g).tolist()
    with torch.no_grad():
        greedy_tok = int(handle.model(input_ids=torch.tensor([ctx])).logits[0, -1].argmax())
    reqs.append((None, ctx, [greedy_tok]))

    expected = []
    with torch.no_grad():
        for _, ctx, cont in reqs:
            row = torch.tensor([ctx + cont[:-1]])
            logprobs = torch.log_softmax(handle.model(input_ids=row).logits.float()[0], -1)[-len(cont):]
            target = torch.tensor(cont)
            expected.append((float(logprobs.gather(-1, target[:, None]).sum()),
                             bool((logprobs.argmax(-1) == target).all())))
    largest_logits[0] = 0
    ours = OptmodelLM(handle, batch_size=4)._loglikelihood_tokens(reqs, disable_tqdm=True)
    for (got, got_greedy), (want, want_greedy) in zip(ours, expected):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-5)
        assert got_greedy == want_greedy
    assert ours[-1][1] is True
    assert largest_logits[0] <= max(BUDGET, handle.model.config.vocab_size)
