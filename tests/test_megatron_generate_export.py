"""task=generate and task=export on backend=megatron (CPU, gloo), as a user runs them.

Generation: megatron-core's static KV cache gives transformers' greedy tokens at TP 1, and
TP 2 / PP 2 (two spawned processes) give TP 1's tokens, greedy and sampled. Export: a
megatron FP8 run dir exports a unified HF checkpoint whose weights, dequantized with their
exported scales, run in transformers with the megatron model's logits; PP 2 writes the
same tensors as one rank. Run dirs that cannot be loaded are refused before loading.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg
from megatron_task_workers import spawn
from optmodel.facts.errors import ConfigError
from optmodel.facts.paths import TINY_MODELS_DIR
from optmodel.run import execute

MEGATRON = ("backend=megatron", "backend.device=cpu", "backend.dtype=float32")
GENERATE = ("task=generate", "task.prompts=[Once upon a time,The cat sat on]", "task.max_new_tokens=12")
SAMPLED = ("task.do_sample=true", "task.temperature=1.5", "task.top_k=50")
IDS = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))

pytestmark = pytest.mark.usefixtures("one_thread")


def generations(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "generations.jsonl").read_text().splitlines()]


def exported_tensors(export: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for shard in sorted(export.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    return tensors


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory):
    """tiny_qwen3 FP8 weight-only on megatron, saved as a distributed checkpoint, not exported."""
    run = tmp_path_factory.mktemp("megatron_fp8") / "run"
    execute(compose_cfg(*MEGATRON, "task.quant_cfg=FP8_DEFAULT_CFG", "task.weight_only=true", "task.export=false",
                        "data.num_samples=2", "data.seq_len=32", "data.eval_max_sequences=2"), run)
    return run


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory, quantized_run):
    base = tmp_path_factory.mktemp("one_rank")
    execute(compose_cfg(*MEGATRON, *GENERATE), base / "greedy")
    execute(compose_cfg(*MEGATRON, *GENERATE, *SAMPLED), base / "sampled")
    execute(compose_cfg(*MEGATRON, "task=export", f"run.load={quantized_run}"), base / "export")
    return base


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, quantized_run):
    base = tmp_path_factory.mktemp("two_ranks")
    layouts = {"tp2": "parallel=tp2", "pp2": "parallel=export_pp"}
    scenarios = [[f"{layout}_{mode}", [*MEGATRON, *GENERATE, *extra, parallel], str(base / f"{layout}_{mode}")]
                 for layout, parallel in layouts.items() for mode, extra in (("greedy", ()), ("sampled", SAMPLED))]
    export = [*MEGATRON, "task=export", "parallel=export_pp", f"run.load={quantized_run}"]
    scenarios.append(["pp2_export", export, str(base / "pp2_export")])
    uneven = ["parallel.pipeline_first_stage_layers=1", "parallel.pipeline_last_stage_layers=3"]  # as pp16_kimi's ends
    scenarios.append(["pp2_uneven_export", [*export, *uneven], str(base / "pp2_uneven_export")])
    spawn(scenarios, str(base / "results.json"))
    return base


def test_greedy_generation_on_megatron_equals_transformers_token_for_token(one_rank, tmp_path):
    execute(compose_cfg(*GENERATE, "backend.dtype=float32"), tmp_path / "hf")
    ours, theirs = generations(one_rank / "greedy"), generations(tmp_path / "hf")
    assert [r["new_tokens"] for r in ours] == [12, 12]
    assert ours == theirs


@pytest.mark.parametrize("layout", ["tp2", "pp2"])
@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_generation_at_tp2_and_pp2_equals_one_rank(one_rank, two_ranks, layout, mode):
    assert generations(two_ranks / f"{layout}_{mode}") == generations(one_rank / mode)
    if mode == "sampled":  # sampling happened: not the greedy text
        assert generations(one_rank / "sampled") != generations(one_rank / "greedy")


@pytest.mark.parametrize("model", ["tiny_deepseek", "tiny_gpt_oss"])  # MLA; sinks + a 32-token sliding window
def test_kv_cached_generation_equals_the_full_forward_loop(model):
    """The handle's KV-cached tokens = re-running the whole sequence per token (36 new tokens:
    past tiny_gpt_oss's window, where the cache must drop keys the mask hides)."""
    from optmodel.backends import megatron
    from optmodel.backends.megatron_world import destroy_model_parallel
    from optmodel.evaluation.forward import Forward
    from optmodel.evaluation.generation import SamplingOptions, generate_ids

    handle = megatron.load(compose_cfg(f"model={model}", *MEGATRON))
    prompts = [handle.tokenizer.encode("Once upon a time")]
    opts = SamplingOptions(max_new_tokens=36)
    cached = generate_ids(Forward(handle.logits, handle.device, handle.max_length, False, handle.generate_tokens),
                          handle.tokenizer, prompts, opts, 1)
    full = generate_ids(Forward(handle.logits, handle.device, handle.max_length, False), handle.tokenizer, prompts, opts, 1)
    destroy_model_parallel()
    assert len(full[0]) == 36 and cached == full


def dequantized(tensors: dict) -> dict:
    """HF state dict of a unified FP8 export: float8 weights times their weight_scale."""
    out = {}
    for name, value in tensors.items():
        if name.endswith(("_scale", "_amax")):
            continue
        if value.dtype == torch.float8_e4m3fn:
            value = value.float() * tensors[name + "_scale"].float()
        out[name] = value.float()
    return out


def test_export_of_a_megatron_run_loads_in_transformers_with_the_megatron_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    from optmodel.backends import megatron
    from optmodel.backends.megatron_world import destroy_model_parallel

    execute(compose_cfg(*MEGATRON, "task=convert"), tmp_path / "convert")
    execute(compose_cfg(*MEGATRON, "task=export", f"run.load={tmp_path / 'convert'}"), tmp_path / "export")
    handle = megatron.load(compose_cfg(*MEGATRON), tmp_path / "convert" / "model")
    ours = handle.logits(IDS)
    destroy_model_parallel()
    with torch.no_grad():
        theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "export", dtype=torch.float32)(IDS).logits
    assert (ours - theirs).abs().max().item() < 1e-4  # bf16 weights exported as bf16: the same numbers


def test_a_model_reshaped_from_its_checkpoint_exports_with_its_own_config(tmp_path):
    """A run's model with fewer, narrower experts than its HF checkpoint (what a pruned run
    records) exports a config.json of that shape, which ModelOpt alone would copy from the
    checkpoint (it updates only the dense sizes): transformers builds it and gets its logits."""
    from transformers import AutoModelForCausalLM

    from optmodel.backends import megatron
    from optmodel.backends.megatron_world import destroy_model_parallel

    handle = megatron.build(compose_cfg("model=tiny_qwen3_moe", *MEGATRON, "model.moe.num_experts=4",
                                        "model.moe.ffn_hidden_size=64", "model.num_layers=3"))
    for param in handle.model.parameters():  # bf16 values, so the bf16 export holds these exact weights
        param.data = param.data.bfloat16().float()
    ours = handle.logits(IDS)
    export = megatron.export_hf(handle, tmp_path / "export")
    destroy_model_parallel()
    config = json.loads((export / "config.json").read_text())
    assert (config["num_local_experts"], config["moe_intermediate_size"], config["num_hidden_layers"]) == (4, 64, 3)
    with torch.no_grad():
        theirs = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)(IDS).logits
    assert (ours - theirs).abs().max().item() < 1e-4


def test_export_of_a_quantized_megatron_run_holds_its_fp8_weights_and_scales(one_rank, quantized_run):
    """transformers drops ModelOpt's scales on reload (STACK_NOTES), so the check is on the
    tensors: each weight_scale is the calibrated amax / 448, and the FP8 weights times it
    are the megatron model's fake-quantized weights, up to FP8 rounding ties that the
    exporter's division and the fake quant's multiplication break differently."""
    from optmodel.backends import load
    from optmodel.config.inherit import inherit_run_model
    from optmodel.backends.megatron_world import destroy_model_parallel

    export = one_rank / "export" / "export"
    assert json.loads((export / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] == "FP8"
    tensors = exported_tensors(export)
    assert len([n for n, t in tensors.items() if t.dtype == torch.float8_e4m3fn]) == 4 * 7  # q k v o gate up down x 4
    handle = load(inherit_run_model(compose_cfg(*MEGATRON, f"run.load={quantized_run}")))
    weights = dequantized(tensors)
    same = total = 0
    for i, layer in enumerate(handle.model.decoder.layers):
        for ours, theirs in ((layer.mlp.linear_fc2, "mlp.down_proj"), (layer.self_attention.linear_proj, "self_attn.o_proj")):
            scale = tensors[f"model.layers.{i}.{theirs}.weight_scale"]
            assert scale.item() == pytest.approx(ours.weight_quantizer.amax.item() / 448, rel=1e-6)
            with torch.no_grad():
                fake = ours.weight_quantizer(ours.weight)
            diff = (fake - weights[f"model.layers.{i}.{theirs}.weight"]).abs()
            assert diff.max().item() <= 32.01 * scale.item()  # one FP8 step at most (the largest: 32 x scale)
            same += int((diff <= 1e-6 * fake.abs().max()).sum())
            total += diff.numel()
    destroy_model_parallel()
    assert same / total > 0.9


@pytest.mark.parametrize("run", ["pp2_export", "pp2_uneven_export"])  # stages of 2 + 2 and 1 + 3 layers
def test_pipeline_parallel_export_writes_the_one_rank_tensors(one_rank, two_ranks, run):
    one, pp2 = exported_tensors(one_rank / "export" / "export"), exported_tensors(two_ranks / run / "export")
    assert one.keys() == pp2.keys() and all(torch.equal(one[k], pp2[k]) for k in one)
    assert (two_ranks / run / "export" / "hf_quant_config.json").read_text() == \
        (one_rank / "export" / "export" / "hf_quant_config.json").read_text()


def test_vllm_fake_quant_export_holds_the_quantized_weights(one_rank, quantized_run, tmp_path):
    execute(compose_cfg(*MEGATRON, "task=export", "task.format=vllm_fq", f"run.load={quantized_run}"), tmp_path)
    export = tmp_path / "export"
    assert (export / "quantizer_state.pth").is_file() and not (export / "hf_quant_config.json").exists()
    folded, unified = exported_tensors(export), dequantized(exported_tensors(one_rank / "export" / "export"))
    name = "model.layers.0.mlp.down_proj.weight"
    assert folded[name].dtype == torch.bfloat16
    assert torch.equal(folded[name], unified[name].to(torch.bfloat16))  # the FP8 grid values, in bf16


# --- refusals before loading -----------------------------------------------------------------
def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run dir whose manifest points at the copy's files."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".optmodel.lock"))
    manifest = dst / "optmodel.json"
    manifest.write_text(manifest.read_text().replace(str(src), str(dst)))
    return dst


def refusal(tmp_path, *overrides) -> str:
    with pytest.raises(ConfigError) as err:
        execute(compose_cfg(*overrides), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    assert len(err.value.problems) == 1, err.value.problems
    return err.value.problems[0]


def test_export_at_tensor_parallel_2_is_refused_with_the_reason(quantized_run, tmp_path):
    text = refusal(tmp_path, *MEGATRON, "task=export", "parallel=tp2", "run.world_size=2", f"run.load={quantized_run}")
    assert text.startswith("parallel.tensor:") and "does not gather tensor-parallel shards" in text
    assert "parallel=export_pp" in text


def test_export_at_expert_parallel_2_is_refused_with_the_reason():
    from optmodel.checked import config_problems

    problems = config_problems(compose_cfg("model=tiny_qwen3_moe", *MEGATRON, "task=export", "run.load=/runs/moe",
                                           "parallel.expert=2", "run.world_size=2"), check_inputs=False)
    assert [p for p in problems if p.startswith("parallel.expert:") and "wrote experts 0-3" in p]


def test_export_of_the_text_only_llama4_is_refused_with_the_reason():
    from optmodel.checked import config_problems

    problems = config_problems(compose_cfg("model=tiny_llama4", *MEGATRON, "task=export", "run.load=/runs/llama4"),
                               check_inputs=False)
    assert [p for p in problems if "exporter has rules for Llama4ForConditionalGeneration" in p]


def test_a_run_dir_of_the_wrong_kind_is_refused_before_loading(quantized_run, tmp_path):
    text = refusal(tmp_path, "task=export", f"run.load={quantized_run}")  # backend=hf
    assert text.startswith("run.load:") and "megatron distributed checkpoint" in text and "Fix: backend=megatron" in text
    generate_run = tmp_path / "generate_run"  # a run that saved no model
    generate_run.mkdir()
    (generate_run / "optmodel.json").write_text(json.dumps({"status": "completed", "task": "generate",
                                                            "outputs": {"generations": str(generate_run / "g.jsonl")}}))
    text = refusal(tmp_path, *MEGATRON, "task=export", f"run.load={generate_run}")
    assert text.startswith("run.load:") and "holds no saved model" in text
    hf_run = tmp_path / "hf_quantized"  # what a backend=hf quantize run leaves: HF weights + modelopt_state.pth
    shutil.copytree(TINY_MODELS_DIR / "tiny_qwen3", hf_run / "quantized")
    (hf_run / "quantized" / "modelopt_state.pth").write_bytes(b"")
    (hf_run / "optmodel.json").write_text(json.dumps({"status": "completed", "quantization": {"format": "FP8_DEFAULT_CFG"},
                                                      "outputs": {"quantized_model": str(hf_run / "quantized")}}))
    text = refusal(tmp_path, *MEGATRON, "task=export", f"run.load={hf_run}")
    assert text.startswith("run.load:") and "Fix: backend=hf" in text


@pytest.mark.parametrize("damage", ["truncated shard", "deleted shard", "no modelopt_state", "deleted checkpoint"])
def test_a_damaged_checkpoint_is_refused_before_loading(quantized_run, tmp_path, damage):
    run = copy_run(quantized_run, tmp_path / "copy")
    ckpt = run / "quantized"
    shard = sorted(ckpt.glob("*.distcp"))[-1]
    if damage == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:1000])
    elif damage == "deleted shard":
        shard.unlink()
    elif damage == "no modelopt_state":
        shutil.rmtree(ckpt / "modelopt_state")
    else:
        shutil.rmtree(ckpt)
    text = refusal(tmp_path, *MEGATRON, "task=generate", "task.prompts=[hi]", f"run.load={run}")
    assert text.startswith("run.load:") and "Fix:" in text
    expected = {"truncated shard": f"{shard.name} holds 1000 of its", "deleted shard": "lacks 1 of the",
                "no modelopt_state": "holds no modelopt_state", "deleted checkpoint": "does not exist"}[damage]
    assert expected in text


@pytest.mark.slow
def test_the_cli_exits_2_with_one_message_for_a_truncated_checkpoint(quantized_run, tmp_path):
    run = copy_run(quantized_run, tmp_path / "copy")
    shard = sorted((run / "quantized").glob("*.distcp"))[0]
    shard.write_bytes(shard.read_bytes()[:-1])
    proc = subprocess.run([sys.executable, "-m", "optmodel", *MEGATRON, "task=export", f"run.load={run}",
                           f"run.output_dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "found 1 problem(s)" in proc.stderr and "the distributed checkpoint is truncated" in proc.stderr
    assert not (tmp_path / "out" / "optmodel.json").exists()


def test_a_depth_pruned_dense_model_exports_a_config_transformers_builds(tmp_path):
    """tiny_qwen3's config.json lists a layer_types entry per layer: the export reference of
    a 3-layer run of it (a depth-pruned megatron run) holds 3, so transformers builds it."""
    from transformers import AutoConfig

    from optmodel.backends.megatron_export import hf_reference
    from optmodel.facts.checkpoint import resolve_checkpoint

    cfg = compose_cfg("model=tiny_qwen3", *MEGATRON, "model.num_layers=3")
    with hf_reference(resolve_checkpoint(cfg.model), cfg.model) as reference:
        config = AutoConfig.from_pretrained(reference)
    assert (config.num_hidden_layers, len(config.layer_types)) == (3, 3)
