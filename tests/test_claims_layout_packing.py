"""Claims that survived deliberate breakage before (issue 20): the parallel-layout checks
each fire on a layout that breaks only that rule, and calibration packing equals an
independent concatenation of the tokenizer's own ids. Mutations: tests/README.md."""

from __future__ import annotations

import pytest

from optmodel.config.validate import parallel_problems
from optmodel.facts.paths import TINY_MODELS_DIR

from conftest import compose_cfg


# --- layout: one rule broken at a time ------------------------------------------------------
def test_tp_that_divides_the_heads_but_not_the_query_groups_is_refused():
    # tiny_qwen3_moe: 4 heads, 2 query groups; TP 4 divides the heads, the FFN (384) and the
    # expert FFN (128), so only the query-group rule can refuse it.
    cfg = compose_cfg("model=tiny_qwen3_moe", "parallel.tensor=4")
    problems = parallel_problems(cfg.model, cfg.parallel)
    assert len(problems) == 1 and "parallel.tensor: TP 4" in problems[0] and "2 query groups" in problems[0]
    assert "parallel.tensor=2" in problems[0]  # the largest TP that divides 4 and 2
    assert parallel_problems(cfg.model, compose_cfg("model=tiny_qwen3_moe", "parallel.tensor=2").parallel) == []


def test_tp_that_divides_heads_and_groups_but_not_the_ffn_is_refused():
    cfg = compose_cfg("model=tiny_qwen3_moe", "parallel.tensor=2", "model.ffn_hidden_size=385")
    problems = parallel_problems(cfg.model, cfg.parallel)
    assert len(problems) == 1 and "ffn_hidden_size 385" in problems[0]


def test_expert_group_etp_x_ep_x_pp_must_divide_the_world():
    from optmodel.facts.layout import world_size_problems

    # Kimi-K2's TP 8 / ETP 1 / EP 64: 8 processes hold the dense layers, but the expert
    # layers need 1 x 64 x 1 = 64.
    par = compose_cfg("model=kimi_k2_instruct", "parallel=kimi_k2").parallel
    problems = world_size_problems(par, 8)
    assert len(problems) == 1 and "ETP x EP x PP = 64" in problems[0]
    assert world_size_problems(par, 64) == []
    assert any("ETP x EP x PP = 64" in p for p in world_size_problems(par, 72))  # 72 = 9 x 8, not x 64


# --- packing against the tokenizer's own ids ------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY_MODELS_DIR / "tiny_qwen3")


RECORDS = [
    "Grace had two eggs. Lucy gave her seven more.",
    "Eleven plus eighteen is twenty-nine.",
    "On a cold Friday, Wendy went to the village. There she found a heavy hat.",
    "Two minus one is one.",
] * 6


def reference_rows(tokenizer, records):
    """Each record's ids as the tokenizer gives them, plus EOS (written here, not imported)."""
    return [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in records]


def data_cfg(*overrides):
    return compose_cfg("data.seq_len=16", "data.num_samples=5", "data.batch_size=2", *overrides).data


def test_pack_mode_is_the_plain_concatenation_cut_into_full_windows(tokenizer):
    import torch

    from optmodel.data.text import calibration_data

    stream = [t for row in reference_rows(tokenizer, RECORDS) for t in row]
    assert len(stream) >= 5 * 16, "the records must fill the asked windows"
    calib = calibration_data(tokenizer, RECORDS, data_cfg("data.packing=pack"))
    rows = torch.cat([b["input_ids"] for b in calib.batches])
    assert rows.tolist() == [stream[i * 16 : (i + 1) * 16] for i in range(5)]
    assert all("attention_mask" not in b for b in calib.batches)  # nothing is padded
    assert [len(b["input_ids"]) for b in calib.batches] == [2, 2, 1]
    assert (calib.sequences, calib.tokens, calib.pad_tokens) == (5, 80, 0)


def test_pad_mode_pads_every_record_to_seq_len_and_counts_the_padding(tokenizer):
    from optmodel.data.text import calibration_data

    records = RECORDS[:5]
    ref = [row[:16] for row in reference_rows(tokenizer, records)]
    calib = calibration_data(tokenizer, records, data_cfg("data.packing=pad"))
    assert [tuple(b["input_ids"].shape) for b in calib.batches] == [(2, 16), (2, 16), (1, 16)]
    masks = [m for b in calib.batches for m in b["attention_mask"].tolist()]
    ids = [r for b in calib.batches for r in b["input_ids"].tolist()]
    assert [sum(m) for m in masks] == [len(r) for r in ref]
    assert [row[: len(r)] for row, r in zip(ids, ref)] == ref
    assert calib.tokens == sum(len(r) for r in ref) and calib.pad_tokens == 5 * 16 - calib.tokens
    assert calib.pad_tokens > 0 and calib.sequences == 5


def test_sort_mode_pads_only_to_the_longest_row_of_each_batch(tokenizer):
    from optmodel.data.text import calibration_data

    records = RECORDS[:5]
    lengths = sorted((len(r[:16]) for r in reference_rows(tokenizer, records)), reverse=True)
    calib = calibration_data(tokenizer, records, data_cfg("data.packing=sort"))
    assert [b["input_ids"].shape[1] for b in calib.batches] == [lengths[0], lengths[2], lengths[4]]
    assert calib.pad_tokens == (lengths[0] - lengths[1]) + (lengths[2] - lengths[3])
