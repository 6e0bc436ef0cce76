"""`optmodel compare` across run kinds and the accuracy gate (task.gate).

One pair of sweeps on the tiny model is shared by the end-to-end tests: three quantization
formats under a perplexity gate of 1% (exports on), and two prune depths. The expected
Pareto marks and gate verdicts are worked out here from the numbers the runs recorded.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from optmodel.checked import config_problems
from optmodel.gate import verdict

from conftest import compose_cfg

QUICK = ["data.num_samples=4", "data.eval_max_sequences=4", "data.seq_len=64"]
FORMATS = ["FP8_DEFAULT_CFG", "INT8_SMOOTHQUANT_CFG", "INT4_AWQ_CFG"]
DEPTHS = [3, 2]
MAX_INCREASE_PCT = 1.0


def optmodel(*args: str, cwd="/", timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optmodel", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"})


def manifest(run_dir) -> dict:
    return json.loads((Path(run_dir) / "optmodel.json").read_text())


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("surgeries")
    quant, prune = root / "quantize", root / "prune"
    q = optmodel("-m", f"task.quant_cfg={','.join(FORMATS)}", "task.export=true", "task.gate.metric=perplexity",
                 f"task.gate.max_drop={MAX_INCREASE_PCT}", *QUICK, f"hydra.sweep.dir={quant}")
    assert q.returncode == 0, q.stderr[-3000:]
    p = optmodel("-m", "task=prune", f"task.export_config.num_layers={','.join(map(str, DEPTHS))}", *QUICK,
                 f"hydra.sweep.dir={prune}")
    assert p.returncode == 0, p.stderr[-3000:]
    out = root / "compare"
    c = optmodel("compare", str(quant), str(prune), "--out", str(out), "--wandb")
    assert c.returncode == 0, c.stderr[-3000:]
    return quant, prune, out, c


# -- the gate -------------------------------------------------------------------------

@pytest.mark.slow
def test_the_gate_passes_runs_within_budget_and_gates_the_others_without_export(sweeps):
    quant, _, _, _ = sweeps
    seen = set()
    for job in json.loads((quant / "sweep.json").read_text())["jobs"]:
        m = manifest(job["run_dir"])
        increase = 100 * (m["metrics"]["perplexity_after"] / m["metrics"]["perplexity_before"] - 1)
        over = increase > MAX_INCREASE_PCT
        seen.add(over)
        assert m["status"] == ("gated" if over else "completed"), (m["quantization"]["format"], increase)
        assert job["state"] == m["status"]
        assert m["gate"]["passed"] is (not over) and abs(m["gate"]["drop"] - increase) < 1e-9
        run_dir = Path(job["run_dir"])
        if over:
            assert m["outputs"] == {} and not (run_dir / "export").exists() and not (run_dir / "quantized").exists()
            assert "over budget" in m["error"] and f"max_drop {MAX_INCREASE_PCT:g}%" in m["error"]
        else:
            assert (run_dir / "export" / "config.json").is_file() and m["outputs"]["export"] == "export"  # relative to the run dir
    assert seen == {True, False}, "the formats fall on both sides of the budget"
    table = (quant / "summary.md").read_text()
    assert "| gated |" in table and "over budget" in table


@pytest.mark.slow
def test_a_run_over_budget_exits_3_with_the_reason_and_no_step_writes_a_model(tmp_path):
    """A pipeline [quantize, export]: the gate stops it at the quantize step's save, before the export step."""
    run_dir = tmp_path / "run"
    proc = optmodel("task=pipeline", "task.steps=[quantize,export]", "task.quantize.quant_cfg=INT4_AWQ_CFG", *QUICK,
                    "task.gate.metric=perplexity", "task.gate.max_drop=0", f"run.output_dir={run_dir}")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "gated: perplexity" in proc.stderr and "over budget" in proc.stderr
    m = manifest(run_dir)
    assert m["status"] == "gated" and m["gate"]["passed"] is False and m["gate"]["drop"] > 0
    assert {k: s["status"] for k, s in m["steps"].items()} == {"quantize": "gated", "export": "pending"}
    measured = m["steps"]["quantize"]["metrics"]
    assert m["gate"]["base"] == measured["perplexity_before"] and m["gate"]["value"] == measured["perplexity_after"]
    assert not (run_dir / "export").exists() and not (run_dir / "quantized").exists() and m["outputs"] == {}


def test_gate_units_perplexity_relative_percent_accuracy_absolute_points():
    ppl = OmegaConf.create({"metric": "perplexity", "max_drop": 5.0})
    assert verdict(ppl, [{"perplexity_before": 4.0, "perplexity_after": 4.2}])["drop"] == pytest.approx(5.0)
    assert verdict(ppl, [{"perplexity_before": 4.0, "perplexity_after": 4.2}])["passed"]
    assert not verdict(ppl, [{"perplexity_before": 4.0, "perplexity_after": 4.21}])["passed"]
    mmlu = OmegaConf.create({"metric": "mmlu", "max_drop": 1.0})
    assert verdict(mmlu, [{"mmlu_before": 0.612, "mmlu_after": 0.598}])["drop"] == pytest.approx(1.4)
    assert not verdict(mmlu, [{"mmlu_before": 0.612, "mmlu_after": 0.598}])["passed"]
    # a pipeline: the base is the first step's before, the value the last measurement
    steps = [{"perplexity_before": 4.0, "perplexity_after": 6.0}, {"perplexity_before": 6.0, "perplexity_after": 4.1}]
    assert verdict(ppl, steps)["drop"] == pytest.approx(2.5) and verdict(ppl, steps)["passed"]
    assert verdict(ppl, [{"perplexity_before": 4.0}]) is None, "not measured after yet: no verdict"


@pytest.mark.parametrize("overrides, expected", [
    (["task.gate.metric=mmlu", "task.gate.max_drop=1"], "task.gate.metric: 'mmlu' is not measured before and after by "
                                                        "task=quantize"),
    (["task.gate.metric=perplexity"], "task.gate.max_drop: task.gate.metric=perplexity needs a budget"),
    (["task.gate.metric=perplexity", "task.gate.max_drop=-1"], "task.gate.max_drop: must be >= 0"),
    (["task.gate.max_drop=1"], "task.gate.max_drop: set, but task.gate.metric is not"),
    (["task.perplexity=false", "task.gate.metric=perplexity", "task.gate.max_drop=1"], "Fix: task.perplexity=true"),
    (["task=prune", "task.export_config.num_layers=2", "task.gate.metric=hellaswag/acc", "task.gate.max_drop=1"],
     "Fix: task.evaluate.tasks=[hellaswag]"),
    (["task=pipeline", "task.steps=[quantize,mmlu,export]", "task.gate.metric=mmlu", "task.gate.max_drop=1"],
     "task.gate.metric: 'mmlu' is not measured before and after by any step of task.steps"),
    (["task=pipeline", "task.steps=[prune,export]", "task.prune.gate.metric=mmlu", "task.prune.gate.max_drop=1"],
     "Fix: task.prune.evaluate.mmlu=true"),
])
def test_gate_settings_a_task_cannot_honour_are_refused_at_validation(overrides, expected):
    problems = config_problems(compose_cfg(*overrides), check_inputs=False)
    assert any(expected in p for p in problems), problems


def test_gate_on_a_measured_metric_is_accepted():
    for overrides in (["task.gate.metric=perplexity", "task.gate.max_drop=2"],
                      ["task.evaluate.tasks=[hellaswag]", "task.gate.metric=hellaswag/acc_norm", "task.gate.max_drop=1"],
                      ["task=pipeline", "task.steps=[quantize,export]", "task.gate.metric=perplexity",
                       "task.gate.max_drop=2"]):
        assert not [p for p in config_problems(compose_cfg(*overrides), check_inputs=False) if "gate" in p], overrides


# -- optmodel compare ---------------------------------------------------------------------

def expected_bytes(m: dict) -> float:
    """Weights at their stored bits: quantized ones at effective_bits, every other one at 16."""
    params = m["architecture"]["parameters"]
    q = m.get("quantization")
    if not q:
        return 2.0 * params
    return (q["effective_bits"] * q["weight_elements"] + 16 * (params - q["weight_elements"])) / 8


@pytest.mark.slow
def test_compare_table_holds_every_run_the_base_and_the_right_pareto_marks(sweeps):
    quant, prune, out, proc = sweeps
    rows = list(csv.DictReader((out / "compare.csv").open()))
    base, runs = rows[0], rows[1:]
    run_dirs = sorted(str(p.parent) for s in (quant, prune) for p in s.glob("*/optmodel.json"))
    assert base["status"] == "reference" and sorted(r["run_dir"] for r in runs) == run_dirs
    assert sorted(r["run"] for r in runs) == sorted(str(Path(d).relative_to(quant.parent)) for d in run_dirs), \
        "runs named <sweep>/<job>"
    manifests = {r["run"]: manifest(r["run_dir"]) for r in runs}
    befores = {m["metrics"]["perplexity_before"] for m in manifests.values()}
    assert float(base["perplexity"]) == pytest.approx(sum(befores) / len(befores))
    assert int(base["parameters"]) == manifests[runs[0]["run"]]["metrics"].get("parameters_before",
                                                                              manifests[runs[0]["run"]]["architecture"]["parameters"])
    for r in runs:
        m = manifests[r["run"]]
        assert r["status"] == m["status"]
        assert float(r["perplexity"]) == m["metrics"]["perplexity_after"]
        assert float(r["model_bytes"]) == pytest.approx(expected_bytes(m))
        assert int(r["parameters"]) == m["architecture"]["parameters"]
    # by hand: a point is on the front when no other shippable point (or the base) is no larger,
    # no worse, and differs in one of the two
    points = {r["run"]: (float(r["model_bytes"]), float(r["perplexity"])) for r in rows
              if r["status"] in ("completed", "reference")}
    for r in rows:
        if r["run"] not in points:
            assert r["pareto_perplexity"] == "", f"{r['run']} ({r['status']}) is no candidate"
            continue
        size, ppl = points[r["run"]]
        beaten = any(s <= size and p <= ppl and (s, p) != (size, ppl) for name, (s, p) in points.items() if name != r["run"])
        assert (r["pareto_perplexity"] == "yes") is (not beaten), r
    pruned = list(csv.DictReader((prune / "summary.csv").open()))  # the prune sweep's own summary
    assert [int(r["parameters_after"]) for r in pruned] == sorted(int(r["parameters_after"]) for r in pruned)
    assert len({r["parameters_after"] for r in pruned}) == len(DEPTHS) and all(r["task"] == "prune" for r in pruned)
    kinds = {r["kind"] for r in runs}
    assert {f"quantize {f}" for f in FORMATS} | {f"prune num_layers={d}" for d in DEPTHS} == kinds
    table = (out / "compare.md").read_text()
    assert table in proc.stdout and "- Pareto-optimal for perplexity: " in table and "- gated: " in table
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / "compare.png").stat().st_size > 10000
    assert list(out.glob("wandb/offline-run-*/run-*.wandb")), "the wandb table went to an offline run"


def _run(path: Path, task: str, metrics: dict, status: str = "completed") -> Path:
    path.mkdir(parents=True)
    (path / "optmodel.json").write_text(json.dumps({"task": task, "model": "tiny_qwen3", "status": status,
                                                    "architecture": {"parameters": 1000, "active_parameters": 1000},
                                                    "metrics": metrics}))
    return path


def test_compare_refuses_dirs_that_are_no_runs_and_runs_without_a_common_metric(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = optmodel("compare", str(empty), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert f"{empty}: not an optmodel run dir" in proc.stderr
    eagle = _run(tmp_path / "eagle", "eagle3", {"al_before": 1.0, "al_after": 1.8})
    quant = _run(tmp_path / "quant", "quantize", {"perplexity_before": 4.0, "perplexity_after": 4.1})
    proc = optmodel("compare", str(eagle), str(quant), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2 and "the runs share no accuracy metric" in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing written"


def test_compare_follows_run_load_to_the_base_and_reads_pipeline_steps(tmp_path):
    """A distill of a pruned model is compared with the original model as its base; a
    pipeline's base is its first step's before, its value its last step's after."""
    from optmodel.compare.table import collect

    pruned = _run(tmp_path / "prune", "prune", {"perplexity_before": 4.0, "perplexity_after": 9.0,
                                                 "parameters_before": 1000})
    distilled = tmp_path / "distill"
    _run(distilled, "distill", {"perplexity_before": 9.0, "perplexity_after": 5.0, "train_steps": 3, "train_tokens": 768,
                                "kl_teacher_before": 0.5, "kl_teacher_after": 0.125})
    data = manifest(distilled)
    data["loaded_from"] = str(pruned)
    data["training"] = {"student": str(pruned), "teacher": "/ckpt/models/teacher"}
    (distilled / "optmodel.json").write_text(json.dumps(data))
    pipeline = _run(tmp_path / "pipe", "pipeline", {})
    data = manifest(pipeline)
    data["steps"] = {"prune": {"metrics": {"perplexity_before": 4.0, "perplexity_after": 8.0}},
                     "distill": {"metrics": {"perplexity_before": 8.0, "perplexity_after": 4.5}}}
    (pipeline / "optmodel.json").write_text(json.dumps(data))
    rows = {r.name: r for r in collect([str(pruned), str(distilled), str(pipeline)])}
    assert rows["base (tiny_qwen3)"].values == {"perplexity": 4.0}
    name = tmp_path.name
    assert rows[f"{name}/distill"].values == {"perplexity": 5.0}
    assert rows[f"{name}/distill"].kind == ("prune -> distill 3 steps, 768 tokens, teacher models/teacher, "
                                            "KL to teacher 0.5 -> 0.125")  # the prune run recorded no target
    assert rows[f"{name}/pipe"].values == {"perplexity": 4.5} and rows[f"{name}/pipe"].kind == "pipeline prune -> distill"


# -- sweep summaries of every task ---------------------------------------------------------

def _sweep(tmp_path: Path, manifests: list) -> Path:
    for num, data in enumerate(manifests):
        (tmp_path / str(num)).mkdir()
        (tmp_path / str(num) / "optmodel.json").write_text(json.dumps({"status": "completed", "error": None, **data}))
    return tmp_path


@pytest.mark.parametrize("task, runs, order, columns, axis", [
    ("prune", [{"metrics": {"parameters_after": p, "active_parameters_after": p, "perplexity_after": 9.0 - p / 1e5}}
               for p in (600000, 300000, 450000)], [1, 2, 0], ["parameters_after", "active_parameters_after"],
     "parameters after"),
    ("eagle3", [{"speculative": {"draft_layers": n, "ttt_steps": 3, "draft_vocab_size": 512},
                 "metrics": {"al_before": 1.0, "al_after": 1 + n / 4, "train_steps": 20}} for n in (2, 1)],
     [1, 0], ["draft_layers", "ttt_steps", "draft_vocab_size", "al_after"], "draft layers"),
    ("distill", [{"metrics": {"train_steps": n, "perplexity_after": 9 - n / 10, "eval_loss": 1 / n}} for n in (40, 10, 20)],
     [1, 2, 0], ["train_steps", "perplexity_after", "eval_loss"], "train steps"),
])
def test_sweep_summary_of_each_task_follows_what_its_sweeps_vary(tmp_path, task, runs, order, columns, axis):
    from optmodel.launch.summary import _x_axis, collect_rows, write_summary

    sweep = _sweep(tmp_path, [{"task": task, **r} for r in runs])
    paths = write_summary(sweep)
    rows = list(csv.DictReader(paths[0].open()))
    assert [int(r["job"]) for r in rows] == order
    assert all(c in rows[0] for c in columns) and all(r["task"] == task for r in rows)
    assert _x_axis(collect_rows(sweep)).replace("_", " ") == axis
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_summary_of_a_pipeline_has_one_row_per_step(tmp_path):
    from optmodel.launch.summary import write_summary

    steps = {"quantize": {"status": "completed", "metrics": {"perplexity_before": 4.0, "perplexity_after": 4.2,
                                                             "effective_bits": 9.1}},
             "mmlu": {"status": "gated", "error": "Gated: mmlu ...", "metrics": {}},
             "export": {"status": "pending"}}
    sweep = _sweep(tmp_path, [{"task": "pipeline", "steps": steps, "metrics": {"perplexity_after": 4.2}}])
    paths = write_summary(sweep)
    rows = list(csv.DictReader(paths[0].open()))
    assert [(r["task"], r["status"]) for r in rows] == [("pipeline/quantize", "completed"), ("pipeline/mmlu", "gated"),
                                                        ("pipeline/export", "pending")]
    assert rows[0]["perplexity_after"] == "4.2" and rows[1]["perplexity_after"] == "" and "Gated" in rows[1]["error"]
    assert "1 pipeline job(s), one row per step." in paths[1].read_text()

