"""Remote code in a checkpoint never runs unless the model config opts in
(model.trust_remote_code, false on every bundled and tiny model) (issue 20)."""

from __future__ import annotations

import json
import shutil

from optmodel.checked import config_problems
from optmodel.facts.paths import TINY_MODELS_DIR

from conftest import compose_cfg

TRAP = "import pathlib\npathlib.Path(__file__).with_name('EXECUTED').write_text('remote code ran')\n" \
       "from transformers import Qwen3Config\n\nclass TrapConfig(Qwen3Config):\n    model_type = '{model_type}'\n"


def checkpoint_with_remote_code(tmp_path, model_type):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(TINY_MODELS_DIR / "tiny_qwen3", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "configuration_trap.TrapConfig",
                                                   "AutoModelForCausalLM": "modeling_trap.TrapForCausalLM"})
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "configuration_trap.py").write_text(TRAP.format(model_type=model_type))
    return ckpt


def test_unknown_architecture_with_remote_code_is_refused_at_validation(tmp_path):
    ckpt = checkpoint_with_remote_code(tmp_path, "trap")
    problems = config_problems(compose_cfg(f"model.checkpoint={ckpt}"), world_size=1)
    assert len(problems) == 1 and "model_type 'trap'" in problems[0] and "not support" in problems[0]
    assert not (ckpt / "EXECUTED").exists()


def test_known_architecture_loads_without_running_the_checkpoints_code(tmp_path):
    from optmodel.backends import hf

    ckpt = checkpoint_with_remote_code(tmp_path, "qwen3")
    cfg = compose_cfg(f"model.checkpoint={ckpt}")
    assert cfg.model.trust_remote_code is False and config_problems(cfg, world_size=1) == []
    handle = hf.load(cfg)
    assert type(handle.model).__name__ == "Qwen3ForCausalLM"
    assert not (ckpt / "EXECUTED").exists(), "the checkpoint's configuration_trap.py was executed"
