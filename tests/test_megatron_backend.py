"""backend=megatron in one process (a one-rank gloo world): HF import, conversion both
ways through the real task, FP8 quantization with save / reload / export."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg
from optmodel.config.validate import ConfigError
from optmodel.facts.rundir import read_manifest
from optmodel.facts.paths import TINY_MODELS_DIR, conf_dir
from optmodel.run import execute

IDS = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))


def megatron_cfg(model="tiny_qwen3", *overrides):
    return compose_cfg(f"model={model}", "backend=megatron", "backend.device=cpu", "backend.dtype=float32", *overrides)


def hf_logits(path, ids=IDS):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module", autouse=True)
def megatron_world():
    yield
    from optmodel.backends.megatron_world import destroy_model_parallel

    destroy_model_parallel()


@pytest.mark.parametrize("model", ["tiny_qwen3", "tiny_llama", "tiny_qwen3_moe", "tiny_deepseek"])
def test_imported_model_gives_hf_logits(model):
    from optmodel.backends import megatron

    handle = megatron.load(megatron_cfg(model))
    diff = (handle.logits(IDS) - hf_logits(TINY_MODELS_DIR / model)).abs().max().item()
    assert diff < 1e-4, f"{model}: max |megatron - HF| = {diff}"


def test_convert_round_trip_reloads_in_transformers_with_identical_logits(tmp_path):
    from optmodel.run import execute

    execute(megatron_cfg("tiny_llama", "task=convert"), tmp_path / "to_megatron")
    ckpt = tmp_path / "to_megatron" / "model"
    assert (ckpt / "metadata.json").is_file()
    # back with backend.dtype=auto: conversion holds the weights in the dtype the checkpoint stores (bf16)
    execute(
        megatron_cfg("tiny_llama", "task=convert", "task.direction=megatron_to_hf", f"task.load={tmp_path / 'to_megatron'}",
                     "backend.dtype=auto"),
        tmp_path / "to_hf",
    )
    export = tmp_path / "to_hf" / "export"
    manifest = read_manifest(tmp_path / "to_hf")
    assert manifest["status"] == "completed" and manifest["outputs"]["export"] == str(export)
    assert manifest["metrics"]["weights_dtype"] == "bfloat16"
    assert json.loads((tmp_path / "to_megatron" / "optmodel.json").read_text())["metrics"]["weights_dtype"] == "float32"
    # bf16 source weights survive fp32 megatron, a bf16 distributed checkpoint, a bf16 megatron model and a
    # bf16 export bit for bit
    assert torch.equal(hf_logits(export), hf_logits(TINY_MODELS_DIR / "tiny_llama"))
    # the distributed checkpoint is stored in the checkpoint's dtype (bf16), not the fp32 compute dtype
    input_bytes = sum(f.stat().st_size for f in (TINY_MODELS_DIR / "tiny_llama").glob("*.safetensors"))
    assert sum(f.stat().st_size for f in ckpt.iterdir()) <= 1.05 * input_bytes
    # only what a HF save writes: no per-layer weight-map fragments beside the index
    assert not [f.name for f in export.glob("model-*.json")]
    source_files = {f.name for f in (TINY_MODELS_DIR / "tiny_llama").iterdir()}  # ModelOpt copies the source's
    allowed = source_files | {"model.safetensors.index.json"}  # non-weight files (tokenizer, remote code, license)
    strays = [f.name for f in export.iterdir() if f.name not in allowed
              and not re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", f.name)]
    assert not strays


def test_export_with_tensor_parallel_is_refused_with_the_reason(tmp_path):
    from optmodel.config.validate import ConfigError
    from optmodel.checked import validate

    (tmp_path / "metadata.json").write_text("{}")
    cfg = megatron_cfg("tiny_qwen3", "task=convert", "task.direction=megatron_to_hf", f"task.load={tmp_path}",
                       "parallel=tp2", "run.world_size=2")
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    text = str(err.value)
    assert "does not gather tensor-parallel shards" in text and "parallel=export_pp" in text
    assert cfg.parallel.tensor == 2  # refused, not overridden


@pytest.fixture(scope="module")
def fp8_model():
    """tiny_qwen3 on megatron, FP8-calibrated with mtq.quantize through the handle's forward."""
    import modelopt.torch.quantization as mtq

    from optmodel.backends import megatron

    handle = megatron.load(megatron_cfg("tiny_qwen3"))
    before = handle.logits(IDS)
    calib = torch.randint(0, 1000, (4, 32), generator=torch.Generator().manual_seed(1))
    batches = [{"input_ids": calib[:2]}, {"input_ids": calib[2:], "attention_mask": torch.ones_like(calib[2:])}]
    mtq.quantize(handle.model, mtq.FP8_DEFAULT_CFG, handle.forward_loop(batches))
    return handle, before


def test_calibration_refuses_padded_batches():
    from optmodel.backends import megatron

    handle = megatron.build(megatron_cfg("tiny_qwen3"))
    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with pytest.raises(ValueError, match="data.packing=pack"):
        handle.forward_loop([{"input_ids": ids, "attention_mask": mask}])(handle.model)


def test_handle_measures_the_same_perplexity_as_transformers():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optmodel.backends import megatron
    from optmodel.data.text import dataset_texts, pack
    from optmodel.metrics import perplexity_of

    cfg = megatron_cfg("tiny_qwen3")
    tok = AutoTokenizer.from_pretrained(TINY_MODELS_DIR / "tiny_qwen3")
    heldout = pack(tok, dataset_texts(cfg.data, "eval"), 128, 8, "data.eval_path")
    hf = AutoModelForCausalLM.from_pretrained(TINY_MODELS_DIR / "tiny_qwen3", dtype=torch.float32).eval()
    handle = megatron.load(cfg)
    ours = perplexity_of(handle.logits, heldout, 4, handle.device)
    theirs = perplexity_of(lambda b: hf(input_ids=b).logits, heldout, 4, "cpu")
    assert ours == pytest.approx(theirs, rel=1e-5) and ours < 100  # a trained model, not noise


def weight_amax(model):
    return {name: m.amax.clone() for name, m in model.named_modules()
            if name.endswith("weight_quantizer") and getattr(m, "amax", None) is not None}


def test_fp8_checkpoint_reloads_with_the_same_quantizers_and_logits(fp8_model, tmp_path):
    from optmodel.backends import megatron

    handle, before = fp8_model
    after = handle.logits(IDS)
    assert 0 < (after - before).abs().max().item() < 5  # fake-quant changed the model, a little
    amax = weight_amax(handle.model)
    assert len(amax) == 4 * 4  # qkv, proj, fc1, fc2 of 4 layers
    ckpt = megatron.save_distributed(handle, tmp_path / "model")
    assert (ckpt / "modelopt_state").is_dir()

    fresh = megatron.load(handle.cfg, ckpt)  # a later run: new model, quantizers from the checkpoint
    reloaded = weight_amax(fresh.model)
    assert reloaded.keys() == amax.keys() and all(torch.equal(reloaded[k], amax[k]) for k in amax)
    assert torch.equal(fresh.logits(IDS), after)


def test_fp8_megatron_model_exports_hf_quant_config(fp8_model, tmp_path):
    from optmodel.backends import megatron

    handle, _ = fp8_model
    export = megatron.export_hf(handle, tmp_path / "export")
    quant = json.loads((export / "hf_quant_config.json").read_text())
    assert quant["quantization"]["quant_algo"] == "FP8"
    assert "quantization_config" in json.loads((export / "config.json").read_text())
    from safetensors import safe_open

    dtypes = set()
    for shard in export.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            dtypes |= {f.get_tensor(k).dtype for k in f.keys() if k.endswith("mlp.down_proj.weight")}
    assert dtypes == {torch.float8_e4m3fn}
    assert not list(tmp_path.glob(".*partial*"))


def test_cpu_adaptations_are_undone_with_the_megatron_world():
    import torch.distributed as dist

    from optmodel.backends import megatron
    from optmodel.backends.megatron_cpu import cpu_patches_active
    from optmodel.backends.megatron_world import destroy_model_parallel

    destroy_model_parallel()  # the world earlier tests left
    original = torch.cuda.current_device
    megatron.build(megatron_cfg("tiny_qwen3"))
    assert cpu_patches_active() and torch.cuda.current_device() == "cpu"
    destroy_model_parallel()
    assert not cpu_patches_active() and torch.cuda.current_device is original and not dist.is_initialized()


def test_mismatched_checkpoint_fails_before_any_weight_is_read(tmp_path):
    from optmodel.config.validate import ConfigError
    from optmodel.run import execute

    ckpt = tmp_path / "ckpt"
    shutil.copytree(TINY_MODELS_DIR / "tiny_qwen3", ckpt)
    hf = json.loads((ckpt / "config.json").read_text())
    hf.update(num_hidden_layers=36, intermediate_size=512)
    (ckpt / "config.json").write_text(json.dumps(hf))
    (ckpt / "model.safetensors").write_bytes(b"not safetensors: reading it would raise another error")
    with pytest.raises(ConfigError) as err:
        execute(megatron_cfg("tiny_qwen3", "task=convert", f"model.checkpoint={ckpt}"), tmp_path / "run")
    text = str(err.value)
    assert "num_layers" in text and "36" in text and "4" in text
    assert "ffn_hidden_size" in text and "512" in text
    assert not (tmp_path / "run").exists()


SHIPPED_MODELS = sorted(p.stem for p in (Path(conf_dir()) / "model").glob("*.yaml") if p.stem != "auto")  # auto: test_auto_model.py


@pytest.mark.parametrize("model", SHIPPED_MODELS)
def test_every_shipped_model_maps_to_a_megatron_config_or_is_refused(model):
    """Every conf/model file either becomes a valid megatron-core TransformerConfig (no weights
    built) or is refused by validation with a reason, never built wrong."""
    from optmodel.backends.megatron_spec import transformer_config
    from optmodel.facts.choices import MEGATRON_FAMILIES
    from optmodel.checked import config_problems

    cfg = compose_cfg(f"model={model}", "backend=megatron", "task=convert")
    if cfg.model.family in MEGATRON_FAMILIES:
        config = transformer_config(cfg.model, cfg.parallel, dtype="bfloat16")
        assert config.num_layers == cfg.model.num_layers and config.hidden_size == cfg.model.hidden_size
        assert config.multi_latent_attention == (cfg.model.mla is not None)
        if cfg.model.moe is not None:
            assert config.num_moe_experts == cfg.model.moe.num_experts
            moe = cfg.model.moe  # Hugging Face's rule: MoE when i >= K and (i + 1) % layer_freq == 0
            expected = [int(i >= moe.first_k_dense_layers and (i + 1) % moe.layer_freq == 0)
                        for i in range(cfg.model.num_layers)]
            assert list(config.moe_layer_freq) == expected
    else:
        problems = config_problems(cfg, check_inputs=False)
        assert any(p.startswith("model.family: backend=megatron does not build") for p in problems)


def test_megatron_core_splits_kimi_k2_on_pp16_kimi_as_the_plan_says():
    """megatron-core's own layer split (what each rank builds) = the dry-run plan: 3, 4 x 14, 2."""
    from megatron.core.transformer.transformer_block import get_num_layers_to_build
    from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

    from optmodel.backends.megatron_spec import transformer_config
    from optmodel.plan import make_plan

    cfg = compose_cfg("model=kimi_k2_instruct", "parallel=pp16_kimi", "backend=megatron", "backend.dtype=bfloat16")
    config = transformer_config(cfg.model, cfg.parallel, dtype="bfloat16")
    built = [get_num_layers_to_build(config, pp_rank=r) for r in range(16)]
    offsets = [get_transformer_layer_offset(config, pp_rank=r) for r in range(16)]
    assert built == [3] + [4] * 14 + [2]
    assert [[o + i for i in range(n)] for o, n in zip(offsets, built)] == [s.layers for s in make_plan(cfg).stages]


def test_quantize_task_on_megatron_measures_saves_and_exports(tmp_path):
    metrics = execute(megatron_cfg("tiny_qwen3", "task.quant_cfg=NVFP4_DEFAULT_CFG", "data.num_samples=4", "data.seq_len=64",
                                   "data.eval_max_sequences=8"), tmp_path)
    manifest = read_manifest(tmp_path)
    assert manifest["status"] == "completed" and manifest["architecture"]["num_layers"] == 4
    assert 0 < metrics["perplexity_increase_pct"] < 10  # the megatron model, fake-quantized on CPU
    assert manifest["quantization"]["layer_formats"].get("nvfp4", 0) >= 4 * 4  # qkv, proj, fc1, fc2 per layer
    assert (tmp_path / "quantized" / "metadata.json").is_file()
    quant = json.loads((tmp_path / "export" / "hf_quant_config.json").read_text())["quantization"]
    assert quant["quant_algo"] == "NVFP4"


def test_quantize_options_megatron_cannot_run_are_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        execute(megatron_cfg("tiny_qwen3", "task.compress=true", "task.auto_quantize.enabled=true", "data.packing=sort"), tmp_path)
    for field in ("task.compress", "task.auto_quantize.enabled", "data.packing"):
        assert f"{field}: not available with backend=megatron" in str(info.value)


def test_mmlu_on_megatron_equals_mmlu_on_transformers(tmp_path):
    sample = Path(__file__).parent / "data" / "mmlu_sample"
    subjects = "task.subjects=[astronomy,elementary_mathematics,high_school_geography]"
    on_megatron = execute(megatron_cfg("tiny_qwen3", "task=mmlu", f"task.data_dir={sample}", subjects), tmp_path / "megatron")
    on_hf = execute(compose_cfg("task=mmlu", f"task.data_dir={sample}", subjects, "backend.dtype=float32"), tmp_path / "hf")
    assert on_megatron["mmlu_correct"] == on_hf["mmlu_correct"] and on_megatron["mmlu_questions"] == 30
    assert read_manifest(tmp_path / "megatron")["metrics"]["mmlu_subjects"] == read_manifest(tmp_path / "hf")["metrics"]["mmlu_subjects"]
