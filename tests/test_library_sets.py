"""Run dirs across the two tested library sets (pyproject.toml, optmodel/facts/library_sets.py): a
megatron quantize run dir written under the pinned set exports under the current one; one
written under the current set is refused by the pinned one at validation, by name, with the
reason. The end-to-end test takes the other set's interpreter from OPTMODEL_OTHER_SET_PYTHON
(.ci/run sets it in the current-set job) and skips without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optmodel.facts import library_sets
from optmodel.facts.rundir import distributed_checkpoint_problems

OTHER_SET_PYTHON = os.environ.get("OPTMODEL_OTHER_SET_PYTHON")
MEGATRON = ("backend=megatron", "backend.device=cpu", "backend.dtype=float32")
QUANTIZE = ("task.quant_cfg=FP8_DEFAULT_CFG", "task.weight_only=true", "task.export=false",
            "data.num_samples=2", "data.seq_len=32", "data.eval_max_sequences=2")
SHARDED = {"sharded_backend": "torch_dist", "sharded_backend_version": 1}


def checkpoint(path: Path, legacy: bool) -> Path:
    """The file listing of a one-shard distributed checkpoint in either layout."""
    path.mkdir()
    (path / ".metadata").write_bytes(b"__0_0.distcp")
    (path / "__0_0.distcp").write_bytes(b"\0")
    metadata = {**SHARDED, "common_backend": "torch", "common_backend_version": 1} if legacy else SHARDED
    (path / "metadata.json").write_text(json.dumps(metadata))
    if legacy:
        (path / "common.pt").write_bytes(b"\0")
    return path


@pytest.mark.parametrize("megatron_core, legacy, refused", [
    ((0, 16, 1), False, True), ((0, 16, 1), True, False), ((0, 19, 2), False, False), ((0, 19, 2), True, False),
])
def test_megatron_core_0_19_checkpoints_are_refused_by_older_readers_only(megatron_core, legacy, refused,
                                                                         monkeypatch, tmp_path):
    monkeypatch.setattr(library_sets, "release", lambda package: megatron_core)
    problems = distributed_checkpoint_problems(checkpoint(tmp_path / "ckpt", legacy), "run.load")
    assert len(problems) == int(refused)
    if refused:
        assert problems[0].startswith("run.load: ") and "megatron-core >= 0.19" in problems[0]
        assert "megatron-core 0.16.1 here cannot read" in problems[0] and "constraints-current.txt" in problems[0]


def optmodel(python: str, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([python, "-m", "optmodel", *MEGATRON, *overrides, f"run.output_dir={out}"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=out.parent)


def megatron_core_of(python: str) -> tuple[int, ...]:
    code = "from optmodel.facts.library_sets import release; print(*release('megatron-core'))"
    return tuple(int(v) for v in subprocess.check_output([python, "-c", code], text=True).split())


@pytest.mark.slow
@pytest.mark.skipif(not OTHER_SET_PYTHON, reason="OPTMODEL_OTHER_SET_PYTHON names no second set's python")
@pytest.mark.parametrize("made_by", ["other set", "this set"])
def test_a_megatron_quantize_run_dir_under_the_other_set(made_by, tmp_path):
    """Exported there when that set's megatron-core reads the layout; else refused before loading."""
    from safetensors import safe_open

    this, other = sys.executable, OTHER_SET_PYTHON
    maker, exporter = (other, this) if made_by == "other set" else (this, other)
    made, read = megatron_core_of(maker), megatron_core_of(exporter)
    assert (made >= (0, 19)) != (read >= (0, 19)), (made, read)  # one set on each side of the layout change
    quantize = optmodel(maker, tmp_path / "quantize", *QUANTIZE)
    assert quantize.returncode == 0, quantize.stderr[-3000:]
    export = optmodel(exporter, tmp_path / "export", "task=export", f"run.load={tmp_path / 'quantize'}")

    if read < (0, 19):  # the pinned set reading the current set's checkpoint
        assert export.returncode == 2 and "Traceback" not in export.stderr, export.stderr[-3000:]
        assert "run.load: " in export.stderr and "megatron-core >= 0.19" in export.stderr
        assert not (tmp_path / "export" / "optmodel.json").exists()
        return
    assert export.returncode == 0, export.stderr[-3000:]
    versions = [json.loads((tmp_path / run / "optmodel.json").read_text())["versions"]["nvidia-modelopt"]
                for run in ("quantize", "export")]
    assert versions[0] != versions[1]  # two ModelOpt releases really took part
    out = tmp_path / "export" / "export"
    assert json.loads((out / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] == "FP8"
    fp8 = 0
    for shard in out.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            fp8 += sum(str(f.get_slice(name).get_dtype()) == "F8_E4M3" for name in f.keys())
    assert fp8 == 4 * 7  # q k v o gate up down in each of tiny_qwen3's 4 layers


def test_ci_installs_the_current_set_with_the_readme_command():
    root = Path(__file__).resolve().parents[1]
    ci = (root / ".ci" / "run").read_text()
    readme = (root / "README.md").read_text()
    install = "pip install -q -e '.[test]' -c constraints-current.txt"
    assert install in ci and install in readme and "pip install torch==2.13.0 -c constraints-current.txt" in readme
    for line in (root / ".ci" / "current_set_tests.txt").read_text().splitlines():
        if line and not line.startswith("#"):  # every listed test exists
            path, _, name = line.partition("::")
            assert (root / path).is_file() and (not name or f"def {name}(" in (root / path).read_text()), line


@pytest.mark.parametrize("modelopt, refused", [((0, 46, 1), True), ((0, 47, 0), False)])
def test_a_recipe_calibrating_with_nvfp4_act_headroom_needs_modelopt_0_47(modelopt, refused, monkeypatch, tmp_path):
    from optmodel.config.recipes import recipe_problems

    recipe = tmp_path / "headroom.yaml"
    recipe.write_text("metadata: {recipe_type: ptq}\nquantize:\n  algorithm: {method: nvfp4_act_headroom}\n"
                      "  quant_cfg: []\n")
    monkeypatch.setattr(library_sets, "release", lambda package: modelopt)
    problems = recipe_problems(str(recipe))
    assert len(problems) == int(refused)
    if refused:
        assert problems[0].startswith(f"task.recipe ({recipe}): ") and "new in ModelOpt 0.47" in problems[0]
