"""MMLU and the lm-eval adapter on the bundled tiny model, against lm-eval's own `hf` model
type (HFLM) on the same in-memory checkpoint: same log-likelihoods, same generations, same
per-subject accuracies. Real transformers, lm-eval and ModelOpt on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from optmodel.config.validate import ConfigError
from optmodel.checked import validate
from optmodel.facts.rundir import read_manifest
from optmodel.run import execute

from conftest import compose_cfg

SAMPLE = Path(__file__).parent / "data" / "mmlu_sample"
SUBJECTS = ["astronomy", "elementary_mathematics", "high_school_geography"]
SUBJECTS_ARG = "[" + ",".join(SUBJECTS) + "]"


@pytest.fixture(scope="module")
def handle():
    from optmodel.backends import hf

    return hf.load(compose_cfg())


@pytest.fixture(scope="module")
def hflm(handle):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=handle.model, tokenizer=handle.tokenizer, batch_size=4)


@pytest.fixture(scope="module")
def mmlu_run(tmp_path_factory):
    """task=mmlu on the sample, the way a user runs it (0-shot, all questions)."""
    run_dir = tmp_path_factory.mktemp("mmlu_run")
    cfg = compose_cfg("task=mmlu", f"task.data_dir={SAMPLE}", f"task.subjects={SUBJECTS_ARG}")
    metrics = execute(cfg, run_dir)
    return run_dir, metrics


def mmlu_opts(**kw):
    from optmodel.evaluation.mmlu import MmluOptions

    return MmluOptions(data_dir=str(SAMPLE), subjects=list(SUBJECTS), **kw)


def requests(kind, args):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args]


# --- the adapter against lm-eval's hf model -----------------------------------------------
MC_ARGS = [
    ("The following are multiple choice questions (with answers) about astronomy.\n\nWhat is the Sun?\n"
     "A. A planet\nB. A star\nC. A galaxy\nD. A moon\nAnswer:", f" {letter}") for letter in "ABCD"
] + [
    ("Eleven plus eighteen is", " twenty-nine."),
    ("On a cold Friday, Wendy went to the", " village. There she found a heavy hat."),
    ("Two minus one is ", "one."),  # trailing space moves into the continuation
    ("", "Grace had two eggs."),  # empty context: scored after the prefix token
]


def test_loglikelihoods_equal_lm_eval_hf_model_batched_or_not(handle, hflm):
    from optmodel.evaluation.lm_adapter import OptmodelLM

    theirs = hflm.loglikelihood(requests("loglikelihood", MC_ARGS))
    batched = OptmodelLM(handle, batch_size=8).loglikelihood(requests("loglikelihood", MC_ARGS))
    one_by_one = OptmodelLM(handle, batch_size=1).loglikelihood(requests("loglikelihood", MC_ARGS))
    for (lp, greedy), (lp_hf, greedy_hf), (lp_1, greedy_1) in zip(batched, theirs, one_by_one):
        assert lp == pytest.approx(lp_hf, abs=1e-4) and greedy == greedy_hf
        assert lp == pytest.approx(lp_1, abs=1e-4) and greedy == greedy_1
    assert batched[4][0] > -5, "the trained tiny model should find its own arithmetic likely"
    assert len({round(lp, 3) for lp, _ in batched[:4]}) == 4, "A/B/C/D must score differently"


def test_rolling_loglikelihood_equals_lm_eval_hf_model_across_windows(handle, hflm):
    from optmodel.evaluation.lm_adapter import OptmodelLM

    text = " ".join(["Eleven plus eighteen is twenty-nine. Ten plus seventeen is twenty-seven."] * 140)
    lm = OptmodelLM(handle, batch_size=4)
    assert len(lm.tok_encode(text)) > lm.max_length, "the text must need several rolling windows"
    args = [(text,), ("Grace had two eggs. Lucy gave her seven more.",)]
    ours = lm.loglikelihood_rolling(requests("loglikelihood_rolling", args))
    theirs = hflm.loglikelihood_rolling(requests("loglikelihood_rolling", args))
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_greedy_generate_until_equals_lm_eval_hf_model(handle, hflm):
    from optmodel.evaluation.lm_adapter import OptmodelLM

    args = [
        ("Eleven plus eighteen is", {"until": ["."], "max_gen_toks": 12, "do_sample": False}),
        ("On a cold Friday, Wendy went to the", {"until": ["\n"], "max_gen_toks": 20, "do_sample": False}),
        ("Grace had", {"until": ["eggs"], "max_gen_toks": 16, "do_sample": False}),
    ]
    ours = OptmodelLM(handle, batch_size=3).generate_until(requests("generate_until", args))
    theirs = hflm.generate_until(requests("generate_until", args))
    assert ours == theirs
    assert ours[0].strip().startswith("twenty"), ours[0]  # a number word, as the corpus taught it


def test_adapter_runs_on_a_logits_only_handle_as_megatron_exposes_it(handle):
    """A backend handle with only `logits(input_ids)` (no mask): right padding for scoring,
    one prompt at a time for generation; same numbers as the HF forward."""
    import torch

    from optmodel.backends.handle import ModelHandle
    from optmodel.evaluation.lm_adapter import OptmodelLM

    class LogitsOnly(ModelHandle):
        takes_mask = False

        def logits(self, input_ids, attention_mask=None):
            with torch.no_grad():
                return self.model(input_ids=input_ids).logits

    bare = LogitsOnly(handle.model, handle.tokenizer, handle.device, handle.source, handle.cfg)
    lm = OptmodelLM(bare, batch_size=8)
    assert not lm.forward.takes_mask and lm.forward.generate_fn is None
    ours = lm.loglikelihood(requests("loglikelihood", MC_ARGS))
    ref = OptmodelLM(handle, batch_size=8).loglikelihood(requests("loglikelihood", MC_ARGS))
    assert [lp for lp, _ in ours] == pytest.approx([lp for lp, _ in ref], abs=1e-4)
    gen = [("Eleven plus eighteen is", {"until": ["."], "max_gen_toks": 8}), ("Two plus seven is", {"until": ["."], "max_gen_toks": 8})]
    assert lm.generate_until(requests("generate_until", gen)) == OptmodelLM(handle).generate_until(requests("generate_until", gen))


# --- MMLU -----------------------------------------------------------------------------------
def test_mmlu_task_equals_lm_eval_hf_model_per_subject(mmlu_run, hflm):
    from optmodel.evaluation.mmlu import run_mmlu

    _, metrics = mmlu_run
    theirs = run_mmlu(hflm, mmlu_opts())
    assert metrics["mmlu_subjects"] == theirs.subject_accuracy()
    assert set(metrics["mmlu_subjects"]) == set(SUBJECTS)
    assert metrics["mmlu"] == theirs.accuracy and metrics["mmlu_questions"] == 30


def test_mmlu_task_writes_table_json_and_manifest(mmlu_run):
    import json

    run_dir, metrics = mmlu_run
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "completed" and manifest["task"] == "mmlu"
    assert manifest["metrics"]["mmlu_subjects"] == metrics["mmlu_subjects"]
    saved = json.loads((run_dir / "mmlu.json").read_text())
    per = saved["subjects"]
    assert sum(s["questions"] for s in per.values()) == 30 and saved["correct"] == metrics["mmlu_correct"]
    # micro: over all questions; macro: over subjects
    assert saved["accuracy"] == pytest.approx(sum(s["correct"] for s in per.values()) / 30)
    assert saved["macro_accuracy"] == pytest.approx(sum(s["accuracy"] for s in per.values()) / 3)
    table = (run_dir / "mmlu.txt").read_text()
    for subject in SUBJECTS:
        assert subject in table
    assert f"{metrics['mmlu_correct']:5}/   30" in table


def test_mmlu_five_shot_on_a_fraction_equals_lm_eval_hf_model(handle, hflm):
    from optmodel.evaluation.lm_adapter import OptmodelLM
    from optmodel.evaluation.mmlu import run_mmlu

    opts = mmlu_opts(num_fewshot=5, fraction=0.3)
    ours = run_mmlu(OptmodelLM(handle, batch_size=4), opts)
    theirs = run_mmlu(hflm, opts)
    assert ours.subjects == theirs.subjects
    assert all(n == 3 for _, n in ours.subjects.values()), "fraction 0.3 keeps the first 3 of 10 questions"


def test_mmlu_reads_the_all_layout_and_the_hf_cache(tmp_path, monkeypatch, handle, mmlu_run):
    """cais/mmlu's all/ files (a `subject` column), found in the Hugging Face hub cache."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from optmodel.evaluation.lm_adapter import OptmodelLM
    from optmodel.evaluation.mmlu import MmluOptions, locate, run_mmlu

    snapshot = tmp_path / "hub" / "datasets--cais--mmlu" / "snapshots" / "0123abcd"
    (snapshot / "all").mkdir(parents=True)
    for split in ("test", "dev"):
        tables = [pq.read_table(SAMPLE / s / f"{split}-00000-of-00001.parquet") for s in SUBJECTS]
        pq.write_table(pa.concat_tables(tables), snapshot / "all" / f"{split}-00000-of-00001.parquet")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    opts = MmluOptions(data_dir=None, subjects=list(SUBJECTS))
    root, sources = locate(opts)
    assert root == snapshot and all(src["filter"] for src in sources.values())
    result = run_mmlu(OptmodelLM(handle, batch_size=8), opts)
    assert result.subject_accuracy() == mmlu_run[1]["mmlu_subjects"]


def test_mmlu_without_data_offline_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("task=mmlu"))
    msg = str(err.value)
    assert "task.data_dir: no MMLU data" in msg and "cais/mmlu is not in the Hugging Face cache" in msg
    assert "hf download cais/mmlu --repo-type dataset" in msg and "task.data_dir=DIR" in msg


def test_mmlu_config_problems_are_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("task=mmlu", f"task.data_dir={SAMPLE}"))  # all 57 asked, 3 present
    assert "lacks 54 of the 57 MMLU subjects" in str(err.value) and "task.subjects=[...]" in str(err.value)
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("task=mmlu", f"task.data_dir={SAMPLE}", "task.subjects=[astronomie]",
                             "task.fraction=0", "task.num_fewshot=6", "task.lower_bound=60"))
    problems = err.value.problems
    assert any(p.startswith("task.subjects: unknown value 'astronomie'. Did you mean astronomy") for p in problems)
    assert sum(p.startswith(("task.fraction", "task.num_fewshot", "task.lower_bound")) for p in problems) == 3


def test_lower_bound_above_accuracy_fails_the_run_with_both_numbers(tmp_path, mmlu_run):
    """The real `optmodel` command: non-zero exit, accuracy and bound in the message, manifest failed."""
    accuracy = mmlu_run[1]["mmlu"]
    run_dir = tmp_path / "gate"
    proc = subprocess.run(
        [sys.executable, "-m", "optmodel", "task=mmlu", f"task.data_dir={SAMPLE}", f"task.subjects={SUBJECTS_ARG}",
         "task.lower_bound=0.9", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    expected = f"MMLU accuracy {accuracy:.4f} (8/30 questions, 3 subjects) is below the lower bound 0.9"
    assert "task.lower_bound" in proc.stderr and expected in proc.stderr, proc.stderr[-2000:]
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "failed" and expected in manifest["error"]
    assert manifest["metrics"]["mmlu"] == accuracy  # the numbers are kept for the record


STORIES_TASK = """
task: tiny_stories
dataset_path: json
dataset_kwargs: {{data_files: {{test: "{path}"}}}}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - {{metric: word_perplexity}}
"""


def test_quantize_with_evaluate_mmlu_reports_accuracy_before_and_after(tmp_path, mmlu_run):
    task_file = tmp_path / "tiny_stories.yaml"
    task_file.write_text(STORIES_TASK.format(path=Path(__file__).parent / "data" / "eval_tasks" / "stories.jsonl"))
    run_dir = tmp_path / "run"
    cfg = compose_cfg("task.evaluate.mmlu=true", f"task.evaluate.data_dir={SAMPLE}",
                      f"task.evaluate.subjects={SUBJECTS_ARG}", f"task.evaluate.tasks=[{task_file}]",
                      "task.quant_cfg=INT8_DEFAULT_CFG", "task.export=false", "task.perplexity=false",
                      "data.num_samples=4")
    execute(cfg, run_dir)
    manifest = read_manifest(run_dir)
    metrics = manifest["metrics"]
    assert manifest["status"] == "completed" and manifest["quantization"]["format"] == "INT8_DEFAULT_CFG"
    assert metrics["mmlu_before"] == mmlu_run[1]["mmlu"], "before: the same load, unquantized"
    assert 0 <= metrics["mmlu_after"] <= 1 and metrics["mmlu_questions_after"] == 30
    assert set(metrics["mmlu_subjects_after"]) == set(SUBJECTS)
    assert metrics["mmlu_macro_before"] == pytest.approx(sum(metrics["mmlu_subjects_before"].values()) / 3)
    # "after" is measured on the quantized model: INT8 moves the held-out word perplexity
    before, after = metrics["tiny_stories/word_perplexity_before"], metrics["tiny_stories/word_perplexity_after"]
    assert before != after and after == pytest.approx(before, rel=0.05)


def test_quantize_lower_bound_gates_the_quantized_model(tmp_path, mmlu_run):
    cfg = compose_cfg("task.evaluate.mmlu=true", f"task.evaluate.data_dir={SAMPLE}",
                      f"task.evaluate.subjects={SUBJECTS_ARG}", "task.evaluate.lower_bound=0.95",
                      "task.perplexity=false", "data.num_samples=2")
    from optmodel.facts.errors import AccuracyBelowBound

    with pytest.raises(AccuracyBelowBound, match=r"task.evaluate.lower_bound: MMLU accuracy after 0\.\d{4} .* below the lower bound 0.95"):
        execute(cfg, tmp_path)
    assert read_manifest(tmp_path)["status"] == "failed"
    assert not (tmp_path / "export").exists(), "a model below the gate is not exported"


@pytest.mark.gpu
def test_adapter_on_cuda_scores_as_on_cpu(handle):
    from optmodel.backends import hf
    from optmodel.evaluation.lm_adapter import OptmodelLM

    gpu = hf.load(compose_cfg("backend.device=cuda"))
    on_gpu = OptmodelLM(gpu, batch_size=8).loglikelihood(requests("loglikelihood", MC_ARGS))
    on_cpu = OptmodelLM(handle, batch_size=8).loglikelihood(requests("loglikelihood", MC_ARGS))
    assert [lp for lp, _ in on_gpu] == pytest.approx([lp for lp, _ in on_cpu], abs=1e-3)


def _mmlu_rank(rank: int, world: int, init_file: str, run_root: str) -> None:
    """One rank of a model-parallel-style run: the forward is a collective (all-reduce), as a
    pipeline or tensor-parallel forward is, so every rank must run every request."""
    import datetime
    import json

    import torch.distributed as dist

    import optmodel.run as run_module
    from optmodel.backends import hf
    from optmodel.backends.handle import ModelHandle

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=180))  # a rank that died fails the test, not hangs it
    loader = run_module.RunContext.load_model
    try:
        cfg = compose_cfg("task=mmlu", f"task.data_dir={SAMPLE}", "task.subjects=[astronomy]", f"run.world_size={world}")
        handle = hf.load(cfg)
        calls = []

        class AllReduced(ModelHandle):  # a model-parallel backend's contract: same logits on every rank
            takes_mask = False

            def logits(self, input_ids, attention_mask=None):
                calls.append(input_ids.shape)
                out = self.model(input_ids=input_ids).logits.float()
                dist.all_reduce(out)
                return out / world

        bare = AllReduced(handle.model, handle.tokenizer, handle.device, handle.source, handle.cfg)
        run_module.RunContext.load_model = lambda self, source=None: bare
        metrics = execute(cfg, Path(run_root) / f"rank{rank}")
        (Path(run_root) / f"rank{rank}.json").write_text(json.dumps({"metrics": metrics, "calls": len(calls)}))
    finally:
        run_module.RunContext.load_model = loader
        dist.destroy_process_group()


def test_mmlu_in_a_two_rank_run_computes_in_lockstep_and_rank0_reports(tmp_path, mmlu_run):
    """Rank 0 runs in this process (its imports are paid), rank 1 in a spawned one."""
    import json
    import multiprocessing

    args = (2, str(tmp_path / "rendezvous"), str(tmp_path))
    other = multiprocessing.get_context("spawn").Process(target=_mmlu_rank, args=(1, *args))
    other.start()
    try:
        _mmlu_rank(0, *args)
    finally:
        other.join(timeout=300)
    assert other.exitcode == 0
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["calls"] == ranks[1]["calls"] > 0, "every rank runs every forward"
    for r in ranks:
        assert r["metrics"]["mmlu_subjects"] == {"astronomy": mmlu_run[1]["mmlu_subjects"]["astronomy"]}
    assert (tmp_path / "rank0" / "mmlu.json").is_file()
    assert not (tmp_path / "rank1" / "mmlu.json").exists(), "only rank 0 writes the results"
