"""task=quantize across ModelOpt formats on the default tiny model, on CPU.

NVFP4 / MX formats run through optmodel's CPU block fake-quant backend; the others through
ModelOpt's own CPU kernels. Each run quantizes, measures perplexity and exports.
"""

from __future__ import annotations

import json

import pytest
import torch

from optmodel.config.validate import ConfigError
from optmodel.facts.rundir import read_manifest
from optmodel.quantization import cpu_fakequant
from optmodel.run import execute

from conftest import compose_cfg

# format -> quant_algo that ModelOpt writes into hf_quant_config.json
FORMATS = {
    "FP8_DEFAULT_CFG": "FP8",
    "INT8_SMOOTHQUANT_CFG": "W8A8_SQ_PER_CHANNEL",
    "INT4_AWQ_CFG": "W4A16_AWQ",
    "W4A8_AWQ_BETA_CFG": "W4A8_AWQ",
    "NVFP4_DEFAULT_CFG": "NVFP4",
    "NVFP4_AWQ_LITE_CFG": "NVFP4_AWQ",
    "MXFP8_DEFAULT_CFG": "MXFP8",
}
SMALL = ("data.num_samples=4", "data.seq_len=64", "data.eval_max_sequences=16")


@pytest.fixture(scope="module")
def format_runs(tmp_path_factory):
    runs = {}
    for fmt in FORMATS:
        run_dir = tmp_path_factory.mktemp(fmt.lower())
        metrics = execute(compose_cfg(f"task.quant_cfg={fmt}", *SMALL), run_dir)
        runs[fmt] = (metrics, run_dir)
    return runs


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_quantizes_measures_and_exports(format_runs, fmt):
    metrics, run_dir = format_runs[fmt]
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "completed"
    assert metrics["perplexity_after"] > 1 and abs(metrics["perplexity_increase_pct"]) < 10
    exported = json.loads((run_dir / "export" / "hf_quant_config.json").read_text())["quantization"]
    assert exported["quant_algo"] == FORMATS[fmt]
    quant = manifest["quantization"]
    assert quant["format"] == fmt and quant["quantized_modules"] >= 28  # 4 layers x 7 linears
    # Per-layer formats: every decoder linear carries a format, the head stays unquantized.
    assert quant["layers"]["lm_head"] == "none"
    assert quant["layers"]["model.layers.0.mlp.down_proj"] != "none"
    assert quant["cpu_block_fakequant"] == fmt.startswith(("NVFP4", "MX"))
    assert (run_dir / "export" / "chat_template.jinja").is_file() or "chat_template" in (
        run_dir / "export" / "tokenizer_config.json"
    ).read_text()


def test_effective_bits_follow_the_format(format_runs):
    bits = {fmt: format_runs[fmt][0]["effective_bits"] for fmt in FORMATS}
    # 4.125 .. 9.14: 4-bit formats below NVFP4's 4.5-bit blocks, below 8-bit formats; the
    # unquantized head (16 bits) lifts every figure on a model this small.
    assert bits["INT4_AWQ_CFG"] < bits["NVFP4_DEFAULT_CFG"] < bits["FP8_DEFAULT_CFG"]
    assert bits["FP8_DEFAULT_CFG"] == bits["INT8_SMOOTHQUANT_CFG"] == bits["MXFP8_DEFAULT_CFG"]


# Expected relative RMS weight error ||Q(W) - W|| / ||W|| of each format, derived from its
# definition for Gaussian-like weights (uniform rounding error = step / sqrt(12)):
# - float elements with m mantissa bits: step 2^(e-m) in the binade [2^e, 2^(e+1)), and
#   E[2^e / |w|] = 1 / (2 ln 2) over a binade: 2^-m / sqrt(12) / (2 ln 2) (E4M3: m=3, E2M1: m=1);
# - INT with b bits and max scaling: step amax / (2^(b-1) - 1), and amax / rms ~ 3 for the
#   rows / 128-blocks of a Gaussian.
_FLOAT = lambda m: 2.0**-m / 12**0.5 / (2 * 0.6931)  # noqa: E731
_INT = lambda b: 3.0 / (2 ** (b - 1) - 1) / 12**0.5  # noqa: E731
WEIGHT_ERROR = {
    "FP8_DEFAULT_CFG": _FLOAT(3), "MXFP8_DEFAULT_CFG": _FLOAT(3), "INT8_SMOOTHQUANT_CFG": _INT(8),
    "INT4_AWQ_CFG": _INT(4), "W4A8_AWQ_BETA_CFG": _INT(4), "NVFP4_DEFAULT_CFG": _FLOAT(1),
    "NVFP4_AWQ_LITE_CFG": _FLOAT(1),
}


@pytest.fixture(scope="module")
def changes(format_runs):
    """format -> (relative weight error of every quantized linear, relative logit change),
    each saved model (run.load) against the unquantized bundled model on one fixed batch."""
    from optmodel.backends import load

    base = load(compose_cfg())
    weights = {n: m.weight.detach().clone() for n, m in base.model.named_modules() if isinstance(m, torch.nn.Linear)}
    ids = torch.randint(0, base.model.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    logits = base.logits(ids)
    out = {}
    for fmt, (_, run_dir) in format_runs.items():
        handle = load(compose_cfg(f"run.load={run_dir}"))
        errors = []
        for name, module in handle.model.named_modules():
            quantizer = getattr(module, "weight_quantizer", None)
            if name in weights and quantizer is not None and quantizer.is_enabled:
                with torch.no_grad():  # the weight the forward uses, AWQ / SmoothQuant scales folded back
                    effective = quantizer(module.weight)
                    scale = getattr(module.input_quantizer, "_pre_quant_scale", None)
                    effective = effective * scale if scale is not None else effective
                errors.append(((effective - weights[name]).norm() / weights[name].norm()).item())
        out[fmt] = (errors, ((handle.logits(ids) - logits).norm() / logits.norm()).item())
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantization_changes_the_model_by_what_the_format_predicts(changes, fmt):
    errors, logit_change = changes[fmt]
    expected = WEIGHT_ERROR[fmt]
    median = sorted(errors)[len(errors) // 2]
    assert len(errors) == 28  # 4 layers x 7 linears, the head excluded
    # A no-op gives 0; a wrong scale or grid moves the median by far more than 2x.
    assert expected / 2 < median < 2 * expected, (fmt, median, expected)
    assert min(errors) > expected / 8, "a linear left (nearly) unquantized"
    # Logits: changed (a no-op is exactly 0), but the model is not destroyed.
    assert 0.01 < logit_change < 0.5, logit_change


def test_fp8_changes_the_model_far_less_than_int4_awq(changes):
    # Orderings asserted on the deterministic weight error and logit change, not on a
    # perplexity difference of a few tenths of a percent (noise on a 1 M-parameter model):
    # measured 0.027 vs 0.12 weight error (4.5x) and 0.056 vs 0.15 logit change (2.6x).
    fp8, int4 = changes["FP8_DEFAULT_CFG"], changes["INT4_AWQ_CFG"]
    assert 3 * max(fp8[0]) < min(int4[0]), (fp8[0], int4[0])
    assert 2 * fp8[1] < int4[1], (fp8[1], int4[1])
    assert 3 * max(changes["MXFP8_DEFAULT_CFG"][0]) < min(changes["NVFP4_DEFAULT_CFG"][0])


def test_cpu_nvfp4_fake_quant_lands_on_the_e2m1_grid():
    torch.manual_seed(0)
    x = torch.randn(8, 64) * 3
    amax = x.abs().amax()
    y = cpu_fakequant._fake_quant_2d(x, (2, 1), (4, 3), 16, amax)
    blocks = y.view(-1, 16)
    for block in blocks:
        # One FP8 scale per 16 values and 8 E2M1 magnitudes: at most 8 distinct magnitudes.
        assert block.abs().unique().numel() <= 8
    rel = ((y - x).norm() / x.norm()).item()
    assert 0.01 < rel < 0.2  # lossy, but a faithful 4-bit approximation


def test_cpu_mx_fake_quant_error_matches_the_element_width():
    torch.manual_seed(0)
    x = torch.randn(8, 64)
    err8 = ((cpu_fakequant._fake_quant_2d(x, (4, 3), (8, 0), 32, None) - x).norm() / x.norm()).item()
    err4 = ((cpu_fakequant._fake_quant_2d(x, (2, 1), (8, 0), 32, None) - x).norm() / x.norm()).item()
    assert 0 < err8 < 0.05 < err4 < 0.3


@pytest.mark.gpu
def test_cpu_block_fake_quant_matches_modelopt_cuda_kernels():
    import modelopt.torch.quantization as mtq
    from transformers import AutoModelForCausalLM

    from optmodel.facts.checkpoint import resolve_checkpoint

    cfg = compose_cfg()
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (2, 64))
    logits = {}
    for device in ("cpu", "cuda"):
        model = AutoModelForCausalLM.from_pretrained(resolve_checkpoint(cfg.model), dtype=torch.float32).to(device)
        qcfg = mtq.NVFP4_DEFAULT_CFG
        if device == "cpu":
            cpu_fakequant.register()
            qcfg = cpu_fakequant.route_to_cpu(qcfg)
        mtq.quantize(model, qcfg, lambda m: m(input_ids=ids.to(device)))
        logits[device] = model(input_ids=ids.to(device)).logits.float().cpu()
    assert torch.allclose(logits["cpu"], logits["cuda"], atol=1e-2, rtol=1e-2)


def test_kv_cache_nvfp4_runs_on_cpu_and_is_exported(tmp_path):
    execute(compose_cfg("task.kv_cache=nvfp4", "task.perplexity=false", "data.num_samples=2", "data.seq_len=64"), tmp_path)
    exported = json.loads((tmp_path / "export" / "hf_quant_config.json").read_text())["quantization"]
    assert exported["quant_algo"] == "FP8" and exported["kv_cache_quant_algo"] == "NVFP4"


def test_recipe_weight_only_and_disable_qkv(tmp_path):
    execute(compose_cfg("task.recipe=general/ptq/fp8_default-kv_fp8", "task.disable_qkv=true", "task.weight_only=true",
                        "task.perplexity=false", "data.num_samples=2", "data.seq_len=64"), tmp_path)
    quant = read_manifest(tmp_path)["quantization"]
    assert quant["format"] == "recipe:general/ptq/fp8_default-kv_fp8"
    assert quant["layers"]["model.layers.0.self_attn.q_proj"] == "none"
    assert quant["layers"]["model.layers.0.self_attn.o_proj"] != "none"
    assert not any(key.startswith("input ") for key in quant["formats"]), quant["formats"]  # weight-only
    exported = json.loads((tmp_path / "export" / "hf_quant_config.json").read_text())["quantization"]
    assert exported["kv_cache_quant_algo"] == "FP8"  # the recipe's KV cache part


def test_compress_stores_real_low_bit_weights(tmp_path):
    metrics = execute(compose_cfg("task.compress=true", "backend.dtype=bfloat16", "data.num_samples=2", "data.seq_len=64",
                                  "data.eval_max_sequences=4", "task.save_model=false"), tmp_path)
    # FP8 weights: the linear layers' bytes halve from bf16; embeddings, norms and head stay.
    assert metrics["weight_bytes_after_compress"] < 0.8 * metrics["weight_bytes_before_compress"]
    assert abs(metrics["perplexity_increase_pct"]) < 5


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("task.quant_cfg=NVFP4_DEFALT_CFG",), "Did you mean NVFP4_DEFAULT_CFG"),
        (("task.recipe=general/speculative_decoding/eagle3",), "is not a PTQ recipe (metadata.recipe_type='speculative_eagle'"),
        (("task.recipe=/no/such/recipe.yaml",), "is neither a file nor a ModelOpt built-in recipe"),
        (("task.auto_quantize.enabled=true", "parallel=export_pp", "backend=hf"), "does not split across pipeline stages"),
        (("task.compress=true",), "task.compress: compressed weights dequantize to bfloat16"),
    ],
)
def test_bad_quantize_input_fails_before_anything_is_written(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        execute(compose_cfg(*overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_empty_calibration_dataset_is_refused(tmp_path):
    empty = tmp_path / "calib.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="holds no text \\(empty dataset\\)"):
        execute(compose_cfg("data=text", "data.source=jsonl", f"data.calib_path={empty}", f"data.eval_path={empty}"),
                tmp_path / "run")
    assert not (tmp_path / "run").exists()
