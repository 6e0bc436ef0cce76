"""task=prune on the bundled trained tiny models: real ModelOpt importance hooks and real
transformers models on CPU. Expected parameter drops are computed from the shapes here."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg
from optmodel.facts.errors import ConfigError
from optmodel.facts.rundir import read_manifest
from optmodel.facts.paths import CORPUS_DIR, TINY_MODELS_DIR

MMLU_SAMPLE = Path(__file__).parent / "data" / "mmlu_sample"
FAST = ("data.num_samples=8", "data.seq_len=128", "data.eval_max_sequences=4", "task.depth_batches=1")


def _load(name):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = TINY_MODELS_DIR / name
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def _windows(tok, split, n, seq=128):
    from optmodel.data.text import pack
    from optmodel.facts.records import read_records

    return pack(tok, read_records(CORPUS_DIR / f"{split}.txt", split), seq, n, split)


@pytest.fixture(scope="module")
def scored():
    """Each tiny model with its importance scores from one calibration batch (8 x 128 tokens)."""
    from optmodel.backends.handle import ModelHandle
    from optmodel.pruning.pruners import HFPruner

    out = {}
    for name in ("tiny_qwen3", "tiny_llama", "tiny_qwen3_moe"):
        model, tok = _load(name)
        handle = ModelHandle(model, tok, torch.device("cpu"), None, None)
        out[name] = (model, tok, HFPruner(handle, "skip_loss", 1).score([{"input_ids": _windows(tok, "train", 8)}]))
    return out


def _pruned(scored, name, export_config, scores=None, depth="skip_loss"):
    from optmodel.backends.handle import ModelHandle
    from optmodel.pruning.pruners import HFPruner

    model, tok, own = scored[name]
    model = copy.deepcopy(model)
    HFPruner(ModelHandle(model, tok, torch.device("cpu"), None, None), depth, 1).prune(export_config, scores or own)
    return model


def perplexity(model, sequences, batch_size, device):
    from optmodel.metrics import perplexity_of

    return perplexity_of(lambda batch: model(input_ids=batch).logits, sequences, batch_size, device)


def _n(model):
    return sum(p.numel() for p in model.parameters())


def _expected_drop(conf, export_config):
    """Parameters removed, from the original config's shapes."""
    h, hd, L = conf.hidden_size, conf.head_dim, conf.num_hidden_layers
    if "num_layers" in export_config:  # every decoder layer has the same shape here
        return None
    if "ffn_hidden_size" in export_config:
        return L * 3 * h * (conf.intermediate_size - export_config["ffn_hidden_size"])
    if "num_attention_heads" in export_config:
        dh = conf.num_attention_heads - export_config["num_attention_heads"]
        dg = conf.num_key_value_heads - export_config.get("num_query_groups", conf.num_key_value_heads)
        return L * h * hd * (2 * dh + 2 * dg)  # q rows + o columns, k + v rows
    if "hidden_size" in export_config:
        d = h - export_config["hidden_size"]
        reads = (conf.num_attention_heads + 2 * conf.num_key_value_heads) * hd + 2 * conf.intermediate_size
        writes = conf.num_attention_heads * hd + conf.intermediate_size
        per_layer = reads + writes + 2  # + both norms
        heads = 1 if conf.tie_word_embeddings else 2
        return d * (heads * conf.vocab_size + 1 + L * per_layer)
    experts, inter = conf.num_experts, conf.moe_intermediate_size
    if "num_moe_experts" in export_config:
        de = experts - export_config["num_moe_experts"]
        return L * de * (3 * h * inter + h)  # gate_up + down per expert, plus its router row
    return L * experts * 3 * h * (inter - export_config["moe_ffn_hidden_size"])


CASES = [
    ("tiny_qwen3", {"num_layers": 3}),
    ("tiny_qwen3", {"ffn_hidden_size": 192}),
    ("tiny_qwen3", {"num_attention_heads": 2}),
    ("tiny_qwen3", {"num_attention_heads": 2, "num_query_groups": 1}),
    ("tiny_llama", {"hidden_size": 96}),  # tied embeddings
    ("tiny_qwen3_moe", {"num_moe_experts": 6}),
    ("tiny_qwen3_moe", {"moe_ffn_hidden_size": 64}),
]


@pytest.mark.parametrize("name,export_config", CASES, ids=[f"{n}-{'-'.join(e)}" for n, e in CASES])
def test_pruned_shapes_drop_exact_parameters_and_reload_cleanly(scored, tmp_path, name, export_config):
    from transformers import AutoModelForCausalLM


    original, tok, _ = scored[name]
    conf = original.config
    pruned = _pruned(scored, name, export_config)
    expected = _expected_drop(conf, export_config)
    if expected is None:
        expected = sum(p.numel() for p in original.model.layers[0].parameters())
    assert _n(original) - _n(pruned) == expected
    pruned.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    hf_names = {"num_layers": "num_hidden_layers", "ffn_hidden_size": "intermediate_size", "hidden_size": "hidden_size",
                "num_attention_heads": "num_attention_heads", "num_query_groups": "num_key_value_heads",
                "num_moe_experts": "num_local_experts", "moe_ffn_hidden_size": "moe_intermediate_size"}
    for key, value in export_config.items():
        assert saved[hf_names[key]] == value
    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched weights
    assert _n(reloaded) == _n(pruned)
    held = _windows(tok, "heldout", 2)
    assert perplexity(reloaded.eval(), held, 2, "cpu") == pytest.approx(perplexity(pruned, held, 2, "cpu"), rel=1e-5)


def test_importance_beats_the_naive_choice(scored):
    """Depth: the layers skip-loss keeps vs the first ones; width: top-importance MLP
    channels vs the first N. Perplexity on held-out text decides."""

    model, tok, scores = scored["tiny_qwen3"]
    held = _windows(tok, "heldout", 8)
    descending = {k: torch.arange(v.shape[-1], 0, -1).float().expand_as(v).clone() for k, v in scores.items()}
    for target in ({"num_layers": 2}, {"ffn_hidden_size": 192}):
        measured = perplexity(_pruned(scored, "tiny_qwen3", target), held, 4, "cpu")
        naive = perplexity(_pruned(scored, "tiny_qwen3", target, scores=descending), held, 4, "cpu")
        assert measured < naive, (target, measured, naive)


def test_parameter_arithmetic_matches_the_models_and_budgets_resolve():
    from optmodel.pruning import targets

    for name in ("tiny_qwen3", "tiny_llama", "tiny_qwen3_moe", "tiny_deepseek"):
        cfg = compose_cfg(f"model={name}")
        model, _ = _load(name)
        total, active = targets.parameters(targets._plain(cfg.model))
        assert total == _n(model), name
    cfg = compose_cfg("model=tiny_qwen3")
    best, _ = targets.resolve_budget(cfg.model, 900_000)
    assert targets.parameters(targets.pruned_model(cfg.model, best))[0] <= 900_000 < _n(_load("tiny_qwen3")[0])


@pytest.mark.parametrize("overrides,expected", [
    ((), "task.export_config: task=prune needs a target"),
    (("task.export_config.num_layers=0",), "task.export_config.num_layers: must be a positive integer"),
    (("task.export_config.ffn_hidden_size=500",), "larger than the model's 384"),
    (("task.export_config.num_attention_heads=3",), "3 heads do not split into 2 query groups"),
    (("model=tiny_qwen3_moe", "task.export_config.num_moe_experts=1"), "fewer than the router's top-k 2"),
    (("task.export_config.num_layers=3", "task.target_params=900000"), "set one target"),
    (("task.target_params=1000",), "no candidate of the search space"),
    (("task.target_params=2000000",), "is not below the model's 1,049,984"),
    (("task.export_config.num_moe_experts=4",), "has no mixture-of-experts layers"),
    (("task.export_config.num_layers=3", "task.scores=/nonexistent"), "task.scores: /nonexistent"),
    (("task.export_config.num_layers=3", "backend=megatron", "task.scores=/nonexistent"), "holds no megatron prune scores"),
])
def test_bad_targets_fail_at_validation(overrides, expected):
    from optmodel.checked import validate

    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("task=prune", *overrides))
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_int4_width_warning(caplog):
    from optmodel.checked import validate

    validate(compose_cfg("task=prune", "task.export_config.ffn_hidden_size=192"))
    assert "not a multiple of 128" in caplog.text


@pytest.fixture(scope="module")
def prune_run(tmp_path_factory):
    from optmodel.run import execute

    run_dir = tmp_path_factory.mktemp("prune_moe")
    cfg = compose_cfg("task=prune", "model=tiny_qwen3_moe", "task.export_config.num_moe_experts=6", *FAST)
    return run_dir, execute(cfg, run_dir)


def test_prune_task_records_the_pruned_shape_and_perplexity(prune_run, capsys):
    run_dir, metrics = prune_run
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "completed"
    assert manifest["architecture"]["moe"]["num_experts"] == 6
    assert manifest["model_config"]["moe"]["num_experts"] == 6
    assert metrics["parameters_before"] - metrics["parameters_after"] == 4 * 2 * (3 * 128 * 128 + 128)
    assert metrics["active_parameters_after"] < metrics["active_parameters_before"]  # fewer router rows
    assert metrics["perplexity_before"] < metrics["perplexity_after"] < 3 * metrics["perplexity_before"]
    assert (run_dir / "prune_scores.pt").is_file() and metrics["scoring_forwards"] > 0
    assert json.loads((Path(manifest["outputs"]["saved_model"]) / "config.json").read_text())["num_local_experts"] == 6


def test_cached_scores_prune_again_with_no_calibration_forward(prune_run, tmp_path):
    from optmodel.run import execute

    first, _ = prune_run
    cfg = compose_cfg("task=prune", "model=tiny_qwen3_moe", "task.export_config.moe_ffn_hidden_size=64",
                      f"task.scores={first}", "task.perplexity=false", "task.save_model=false", *FAST)
    metrics = execute(cfg, tmp_path)
    assert metrics["scoring_forwards"] == 0 and metrics["scores_reused"] == str(first)
    assert metrics["parameters_before"] - metrics["parameters_after"] == 4 * 8 * 3 * 128 * 64


def test_later_tasks_build_the_pruned_shape_from_the_run_dir(prune_run, tmp_path):
    from optmodel.run import execute

    first, _ = prune_run
    quant = execute(compose_cfg("task=quantize", f"run.load={first}", "task.export=false", *FAST[:3]), tmp_path / "q")
    assert read_manifest(tmp_path / "q")["architecture"]["moe"]["num_experts"] == 6 and quant["perplexity_after"] > 0
    mmlu = execute(compose_cfg("task=mmlu", f"run.load={first}", f"task.data_dir={MMLU_SAMPLE}",
                               "task.subjects=[astronomy]"), tmp_path / "m")
    assert 0 <= mmlu["mmlu"] <= 1 and read_manifest(tmp_path / "m")["status"] == "completed"


@pytest.mark.gpu
def test_megatron_mcore_minitron_prunes_depth_and_ffn(tmp_path):
    """backend=megatron on a GPU with Transformer-Engine: ModelOpt's mcore_minitron on the TE spec, as shipped."""
    from optmodel.facts.machine import transformer_engine_installed
    from optmodel.run import execute

    if not transformer_engine_installed():
        pytest.skip("needs Transformer-Engine")
    cfg = compose_cfg("task=prune", "backend=megatron", "backend.device=cuda", "task.export_config.num_layers=3",
                      "task.export_config.ffn_hidden_size=192", *FAST[:3])
    metrics = execute(cfg, tmp_path)
    arch = read_manifest(tmp_path)["architecture"]
    assert arch["num_layers"] == 3 and arch["ffn_hidden_size"] == 192
    assert metrics["parameters_before"] - metrics["parameters_after"] > 0


def test_cosine_depth_costs_no_extra_forward_and_its_scores_serve_cosine_only(tmp_path):
    """depth_importance=cosine ranks layers from the scoring pass itself: one forward per
    calibration batch, no skipped-layer passes; its scores file then has no skip_loss to reuse."""
    from optmodel.backends.handle import ModelHandle
    from optmodel.pruning import scores as score_files
    from optmodel.pruning.pruners import HFPruner
    from optmodel.tasks.prune.run import preflight

    model, tok = _load("tiny_qwen3")
    forwards = []
    model.register_forward_pre_hook(lambda *args: forwards.append(1))
    batches = [{"input_ids": _windows(tok, "train", 2)}] * 2
    scores = HFPruner(ModelHandle(model, tok, torch.device("cpu"), None, None), "cosine", 2).score(batches)
    assert len(forwards) == len(batches) and "layers_skip_loss" not in scores
    score_files.save(tmp_path / score_files.SCORES_FILE, scores, {}, {})
    preflight(compose_cfg("task=prune", "task.export_config.num_layers=3", f"task.scores={tmp_path}",
                          "task.depth_importance=cosine"))
    with pytest.raises(ConfigError) as err:
        preflight(compose_cfg("task=prune", "task.export_config.num_layers=3", f"task.scores={tmp_path}"))
    assert err.value.problems[0].startswith("task.depth_importance:") and "Fix: task.depth_importance=cosine" in err.value.problems[0]
