"""Every seed model validates at the layouts its README line names, and the dry-run plan's
parameter totals are within 1% of the published counts. No torch model is built (the
Llama-4 vision tower is counted on the meta device)."""

import re
from pathlib import Path

import pytest

from conftest import compose_cfg
from optmodel.checked import validate
from optmodel.plan import make_plan, required_world_size

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_layouts():
    """model -> the layouts (parallel= names) of its row in README's seed-model table."""
    rows = {}
    section = README.read_text().split("## The seed models", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)` \|.*\| ([\w, ]+) \|$", line)
        if m:
            rows[m.group(1)] = [name.strip() for name in m.group(2).split(",")]
    return rows


LAYOUTS = readme_layouts()
SEEDS = ["qwen2_5_0_5b_instruct", "qwen2_5_7b_instruct", "qwen3_0_6b", "qwen3_8b", "qwen3_30b_a3b",
         "qwen3_235b_a22b", "llama3_1_8b_instruct", "llama3_2_1b_instruct", "llama4_scout_17b_16e_instruct",
         "llama4_maverick_17b_128e_instruct", "kimi_k2_instruct", "deepseek_r1", "deepseek_v2_lite",
         "gpt_oss_20b", "gpt_oss_120b"]


def test_readme_names_every_seed_model():
    assert sorted(LAYOUTS) == sorted(SEEDS)


@pytest.mark.parametrize("model", SEEDS)
def test_seed_model_validates_at_its_readme_layouts(model):
    for layout in LAYOUTS[model]:
        backend = "hf" if layout == "single" else "megatron"
        extra = ["backend.attn_implementation=eager"] if model.startswith("gpt_oss") and backend == "hf" else []
        cfg = compose_cfg(f"model={model}", f"parallel={layout}", f"backend={backend}", "task=convert"
                          if backend == "megatron" else "task=quantize", *extra)
        world = required_world_size(cfg.parallel)
        validate(cfg, world_size=world, check_inputs=False)  # raises ConfigError listing the problems


def llama4_vision_params() -> int:
    """Vision encoder + projector of both Llama-4 checkpoints (their config.json vision_config),
    counted by transformers' own modules on the meta device."""
    import torch
    from transformers import Llama4Config, Llama4TextConfig, Llama4VisionConfig
    from transformers.models.llama4.modeling_llama4 import Llama4MultiModalProjector, Llama4VisionModel

    vision = Llama4VisionConfig(hidden_size=1408, intermediate_size=5632, num_hidden_layers=34,
                                num_attention_heads=16, image_size=336, patch_size=14, projector_input_dim=4096,
                                projector_output_dim=4096, vision_output_dim=4096, pixel_shuffle_ratio=0.5)
    with torch.device("meta"):
        parts = [Llama4VisionModel(vision),
                 Llama4MultiModalProjector(Llama4Config(vision_config=vision,
                                                        text_config=Llama4TextConfig(hidden_size=5120)))]
    return sum(p.numel() for part in parts for p in part.parameters())


# Published totals: Meta's Llama-4 model cards (Scout 17B active / 109B total, Maverick 17B /
# 400B, text + vision); OpenAI's gpt-oss model card (20.91B and 116.83B total parameters).
PUBLISHED = {
    "llama4_scout_17b_16e_instruct": 109e9,
    "llama4_maverick_17b_128e_instruct": 400e9,
    "gpt_oss_20b": 20.91e9,
    "gpt_oss_120b": 116.83e9,
}


@pytest.mark.parametrize("model", PUBLISHED)
def test_dry_run_parameter_total_matches_the_published_count(model):
    total = make_plan(compose_cfg(f"model={model}", "backend=megatron")).total_params
    if model.startswith("llama4"):  # the plan counts the text model megatron builds
        total += llama4_vision_params()
    assert abs(total / PUBLISHED[model] - 1) < 0.01, f"{model}: {total:,} vs {PUBLISHED[model]:,.0f}"
