"""The real entrypoint under torchrun: convert at TP 2, reshard, export at PP 2 (CPU, gloo).

A subprocess is the point here: torchrun's variables -> optmodel.distributed -> megatron
parallel state -> task=convert, both directions, and a checkpoint saved at one layout
exported at another.
"""

import os
import subprocess
import sys

import pytest
import torch

from optmodel.distributed import free_port
from optmodel.facts.paths import TINY_MODELS_DIR

pytestmark = pytest.mark.slow


def torchrun(*overrides, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "optmodel", "task=convert", "backend=megatron", "model=tiny_qwen3_moe", *overrides]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_tp2_checkpoint_exports_at_pp2_with_identical_logits(tmp_path):
    to_megatron, to_hf = tmp_path / "tp2", tmp_path / "pp2"
    out = torchrun("parallel=tp2", f"run.output_dir={to_megatron}", cwd=tmp_path)
    assert out.count("optmodel convert (hf_to_megatron)") == 1  # printed by rank 0 only
    assert sorted(p.name for p in (to_megatron / "model").glob("*.distcp")) == [
        "__0_0.distcp", "__0_1.distcp", "__1_0.distcp", "__1_1.distcp"]  # both ranks wrote shards
    torchrun("parallel=export_pp", "task.direction=megatron_to_hf", f"task.load={to_megatron}",
             f"run.output_dir={to_hf}", cwd=tmp_path)
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = AutoModelForCausalLM.from_pretrained(to_hf / "export", dtype=torch.float32)(ids).logits
        theirs = AutoModelForCausalLM.from_pretrained(TINY_MODELS_DIR / "tiny_qwen3_moe", dtype=torch.float32)(ids).logits
    assert torch.equal(ours, theirs)
