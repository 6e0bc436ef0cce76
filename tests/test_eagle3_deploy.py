"""EAGLE3 draft exports per serving engine (task.deploy): aux layer ids in each engine's
numbering, tensor names and shapes the engine's loader takes, the rope the draft trained
with, three distinct aux layers on a 4-layer target, refusals with the reason, and the
reload of every export onto its target (task=validate's path) with the weights it saved.
No training: the drafts are freshly converted tiny targets (real ModelOpt convert + export)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optmodel.checked import config_problems

from conftest import compose_cfg

TINY_QWEN3 = Path(__file__).resolve().parent.parent / "optmodel" / "assets" / "tiny_models" / "tiny_qwen3"


def target():
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY_QWEN3, dtype=torch.float32)


def export_draft(out: Path, deploy: str, layers: int = 1):
    """A converted (untrained) draft of the tiny target exported for `deploy`; the model too."""
    import torch

    from optmodel.speculative.convert import DraftSpec, convert
    from optmodel.speculative.draft import export

    torch.manual_seed(0)
    model = convert(target(), DraftSpec(num_layers=layers))
    with torch.no_grad():  # norms start at 1: make every saved tensor distinguishable
        for p in model.eagle_module.parameters():
            p.add_(torch.rand_like(p))
    export(model, out, deploy=deploy)
    return model


def tensors(draft: Path):
    from safetensors.torch import load_file

    return load_file(str(draft / "model.safetensors"))


def test_a_4_layer_target_gets_three_distinct_aux_layers():
    from optmodel.speculative.serving import default_aux_layer_ids

    assert default_aux_layer_ids(4) == [0, 1, 2]  # ModelOpt's own default gives [0, 1]
    for n in range(4, 80):
        ids = default_aux_layer_ids(n)
        assert len(set(ids)) == 3 and ids == sorted(ids) and 0 <= ids[0] and ids[-1] <= n - 2
    assert default_aux_layer_ids(32) == [1, 15, 28]  # ModelOpt's (and TensorRT-LLM's) where it has three


@pytest.mark.parametrize("deploy, engine_ids", [("none", [0, 1, 2]), ("vllm", [1, 2, 3]), ("sglang", [0, 1, 2]),
                                                ("trtllm", [0, 1, 2])])
def test_export_writes_each_engine_s_aux_ids_and_the_trained_rope(tmp_path, deploy, engine_ids, one_thread):
    draft = tmp_path / "draft"
    export_draft(draft, deploy)
    conf = json.loads((draft / "config.json").read_text())
    note = json.loads((draft / "optmodel_deploy.json").read_text())
    # the draft trained on the outputs of layers 0, 1, 2 (ModelOpt's forward hooks)
    assert note["trained_aux_layer_ids"] == [0, 1, 2] and note["engine_aux_layer_ids"] == engine_ids
    assert conf["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == engine_ids
    # vLLM reads the top-level key first; the others read eagle_config only
    assert conf.get("eagle_aux_hidden_state_layer_ids") == (engine_ids if deploy == "vllm" else None)
    theta = json.loads((TINY_QWEN3 / "config.json").read_text())["rope_parameters"]["rope_theta"]
    assert conf["rope_scaling"] == {"rope_type": "default", "rope_theta": theta}  # no yarn it never trained with
    assert conf["rope_theta"] == theta
    assert tuple(tensors(draft)["fc.weight"].shape) == (128, 3 * 128)  # three aux layers fused


@pytest.mark.parametrize("layers", [1, 2])
def test_sglang_export_loads_every_tensor_in_sglang_0_5_23(tmp_path, layers, one_thread):
    from optmodel.speculative.serving import sglang_load_problems

    draft = tmp_path / "draft"
    export_draft(draft, "sglang", layers=layers)
    conf = json.loads((draft / "config.json").read_text())
    shapes = {k: tuple(v.shape) for k, v in tensors(draft).items()}
    assert sglang_load_problems(conf, shapes) == []
    if layers == 2:  # SGLang's later layers normalize with hidden_norm, ModelOpt's with input_layernorm
        assert "layers.1.hidden_norm.weight" in shapes and "layers.1.input_layernorm.weight" not in shapes
        # ModelOpt's own layout would leave that norm unloaded in SGLang
        modelopt = {k.replace("layers.1.hidden_norm", "layers.1.input_layernorm"): v for k, v in shapes.items()}
        assert any("layers.1.input_layernorm" in p for p in sglang_load_problems(conf, modelopt))
    two_aux = {**conf, "eagle_config": {**conf["eagle_config"], "eagle_aux_hidden_state_layer_ids": [0, 1]}}
    assert any("fc.weight" in p for p in sglang_load_problems(two_aux, shapes))


@pytest.mark.parametrize("deploy", ["vllm", "sglang"])
def test_engine_export_reloads_onto_its_target_with_the_saved_weights(tmp_path, deploy, one_thread):
    """task=validate's path: the engine's ids and names read back in ModelOpt's terms."""
    import torch

    from optmodel.speculative.draft import attach

    draft = tmp_path / "draft"
    trained = export_draft(draft, deploy, layers=2)
    reloaded = attach(target(), draft)
    assert list(reloaded.eagle_config.eagle_aux_hidden_state_layer_ids) == [0, 1, 2]
    want = trained.eagle_module.state_dict()
    got = reloaded.eagle_module.state_dict()
    assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.parametrize("overrides, words", [
    (["task.deploy=sglang", "task.aux_layer_ids=[0,1,3]"], "last layer (3"),
    (["task.deploy=any"], "no one EAGLE3 draft layout"),
    (["task.deploy=vlm"], "Did you mean vllm"),
])
def test_deploy_an_engine_cannot_serve_is_refused_with_the_reason(overrides, words):
    problems = config_problems(compose_cfg("task=eagle3", *overrides))
    assert len(problems) == 1 and problems[0].startswith("task.deploy:") and words in problems[0]


def test_vllm_serves_the_last_layer_s_output():
    """vLLM 0.32 adds the state after layer L-1 as id L: no refusal there."""
    assert config_problems(compose_cfg("task=eagle3", "task.deploy=vllm", "task.aux_layer_ids=[0,1,3]")) == []
