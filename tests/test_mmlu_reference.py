"""MMLU against lm-eval's own `mmlu` task definition (issue 20): the reference side reads the
task YAML shipped in the installed lm_eval package (prompt, description, few-shot split and
sampler, choices, target, metric) and runs it through lm-eval's `hf` model type on a model
loaded with transformers directly; no optmodel code on that side.

lm-eval's `mmlu_<subject>` tasks name `dataset_path: cais/mmlu`, which `datasets` resolves on
the Hugging Face hub (or its cache); the bundled sample is a directory in that repository's
layout, not a hub cache entry, so the only field replaced is where the data is: the same
parquet files through `datasets`' parquet builder. Everything the score depends on comes
from lm-eval's YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from optmodel.facts.paths import TINY_MODELS_DIR

SAMPLE = Path(__file__).parent / "data" / "mmlu_sample"
SUBJECTS = ["astronomy", "high_school_geography"]
FEWSHOT = 2


def lm_eval_mmlu_config(subject: str) -> dict:
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    path = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default" / f"mmlu_{subject}.yaml"
    config = dict(load_yaml(path))  # resolves `include: _default_template_yaml`
    assert config["dataset_path"] == "cais/mmlu" and config["fewshot_split"] == "dev"
    config.pop("tag", None)
    config["dataset_path"] = "parquet"
    config["dataset_name"] = None
    config["dataset_kwargs"] = {"data_files": {
        split: sorted(str(p) for p in (SAMPLE / subject).glob(f"{split}-*.parquet")) for split in ("test", "dev")}}
    return config


@pytest.fixture(scope="module")
def recording_lm():
    """lm-eval's HFLM on the tiny model (transformers only) that remembers every request."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = TINY_MODELS_DIR / "tiny_qwen3"

    class Recording(HFLM):
        seen: list = []

        def loglikelihood(self, requests, disable_tqdm=False):
            Recording.seen.extend(r.args for r in requests)
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return Recording(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(path), batch_size=8)


def evaluate_reference(lm):
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm.seen.clear()
    results = lm_eval.simple_evaluate(
        model=lm, tasks=[lm_eval_mmlu_config(s) for s in SUBJECTS], num_fewshot=FEWSHOT,
        task_manager=TaskManager(include_defaults=False), random_seed=1234, numpy_random_seed=1234,
        torch_random_seed=1234, fewshot_random_seed=1234)
    return {s: results["results"][f"mmlu_{s}"]["acc,none"] for s in SUBJECTS}, sorted(lm.seen)


@pytest.fixture(scope="module")
def both(recording_lm):
    """(reference accuracies, reference requests, optmodel's result, optmodel's requests)."""
    from optmodel.evaluation.mmlu import MmluOptions, run_mmlu

    ref_acc, ref_requests = evaluate_reference(recording_lm)
    recording_lm.seen.clear()
    ours = run_mmlu(recording_lm, MmluOptions(data_dir=str(SAMPLE), subjects=list(SUBJECTS), num_fewshot=FEWSHOT))
    return ref_acc, ref_requests, ours, sorted(recording_lm.seen)


def test_mmlu_prompts_few_shot_and_scores_equal_lm_eval_mmlu_task(both):
    ref_acc, ref_requests, ours, our_requests = both
    # 10 test questions per subject x 4 letters, each with the same context and continuation.
    assert len(ref_requests) == len(our_requests) == len(SUBJECTS) * 10 * 4
    assert our_requests == ref_requests
    contexts = {c for c, _ in ref_requests}
    assert all(c.count("\nAnswer:") == FEWSHOT + 1 for c in contexts), "k shots + the question"
    assert ours.subject_accuracy() == pytest.approx(ref_acc, abs=1e-12)


def test_few_shot_examples_come_from_the_dev_split_never_the_test_split(both):
    """The shots in every prompt are the first dev questions of that subject, read from the
    parquet files here (pyarrow), and no test question appears as a shot."""
    import pyarrow.parquet as pq

    our_requests = both[3]
    for subject in SUBJECTS:
        dev = pq.read_table(next((SAMPLE / subject).glob("dev-*.parquet"))).to_pylist()
        test = pq.read_table(next((SAMPLE / subject).glob("test-*.parquet"))).to_pylist()
        header = f"about {subject.replace('_', ' ')}.\n\n"
        contexts = {c for c, _ in our_requests if header in c}
        assert len(contexts) == len(test)
        for context in contexts:
            shots = context.split(header, 1)[1].split("\n\n")[:FEWSHOT]
            for shot, row in zip(shots, dev[:FEWSHOT]):
                assert shot.startswith(row["question"].strip() + "\nA. ")
                assert shot.endswith("Answer: " + "ABCD"[row["answer"]])
            assert not any(shot.startswith(t["question"].strip() + "\n") for shot in shots for t in test)
