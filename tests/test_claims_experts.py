"""task.sync_expert_weight_amax: one weight amax per layer and projection, shared by all its
experts (megatron-core's expert layers, where ModelOpt implements it); refused on backend=hf,
where ModelOpt 0.46 leaves the flag without effect (issue 20)."""

from __future__ import annotations

from optmodel.checked import config_problems

from conftest import compose_cfg


def test_sync_expert_weight_amax_is_refused_on_hf_where_it_would_do_nothing():
    problems = config_problems(compose_cfg("model=tiny_qwen3_moe", "task.sync_expert_weight_amax=true"), world_size=1)
    assert len(problems) == 1 and problems[0].startswith("task.sync_expert_weight_amax:") and "backend=megatron" in problems[0]


def test_synced_expert_amax_is_the_max_over_the_layers_experts_on_megatron():
    import torch
    from modelopt.torch.quantization.nn import TensorQuantizer

    from optmodel.backends import load
    from optmodel.data.text import calibration_data, dataset_texts
    from optmodel.quantization.calibrate import quantize

    cfg = compose_cfg("model=tiny_qwen3_moe", "backend=megatron", "backend.device=cpu", "backend.dtype=float32",
                      "task.sync_expert_weight_amax=true", "data.num_samples=2", "data.seq_len=32")
    assert config_problems(cfg, world_size=1) == []
    handle = load(cfg)
    own = {}  # (layer, projection) -> each expert's weight abs max, read before quantizing
    for name, module in handle.model.named_modules():
        if ".experts.local_experts." in name and name.endswith(("linear_fc1", "linear_fc2")):
            layer = name.split(".experts.")[0]
            own.setdefault((layer, name.rsplit(".", 1)[1]), []).append(module.weight.detach().abs().max().item())
    assert len(own) == 4 * 2 and all(len(v) == 8 for v in own.values())  # 4 layers x fc1/fc2, 8 experts
    assert all(max(v) > min(v) for v in own.values()), "experts must differ for the test to mean anything"
    calib = calibration_data(handle.tokenizer, dataset_texts(cfg.data, "calib"), cfg.data)
    quantize(handle, cfg.task, calib.batches, "/nonexistent")
    for name, module in handle.model.named_modules():
        if isinstance(module, TensorQuantizer) and ".experts.local_experts." in name and name.endswith("weight_quantizer"):
            layer, proj = name.split(".experts.")[0], name.rsplit(".", 2)[1]
            assert torch.equal(module.amax.float().max(), torch.tensor(max(own[(layer, proj)]))), name
