"""task=eval (lm-eval tasks from local task YAML files, all three request kinds) and
task=generate on the bundled tiny model; eval numbers checked against lm-eval's own `hf`
model type on the same checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optmodel.config.validate import ConfigError
from optmodel.checked import validate
from optmodel.facts.rundir import read_manifest
from optmodel.run import execute

from conftest import compose_cfg

# arith.jsonl: 16 sums in the bundled corpus' grammar ("Eleven plus five is"), the answer and
# three wrong number words; stories.jsonl: the first 6 non-arithmetic paragraphs of the
# held-out corpus.
DATA = Path(__file__).parent / "data" / "eval_tasks"

# Local lm-eval tasks over the JSONL files in tests/data/eval_tasks (written at test time
# because lm-eval resolves data_files against the working directory, not the YAML).
TASK_YAMLS = {
    "tiny_arith": """
task: tiny_arith
dataset_path: json
dataset_kwargs: {{data_files: {{test: "{data}/arith.jsonl"}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
  - {{metric: acc_norm, aggregation: mean, higher_is_better: true}}
""",
    "tiny_arith_gen": """
task: tiny_arith_gen
dataset_path: json
dataset_kwargs: {{data_files: {{test: "{data}/arith.jsonl"}}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: " {{{{target}}}}"
generation_kwargs: {{until: ["."], max_gen_toks: 8, do_sample: false}}
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true, regexes_to_ignore: [" "]}}
""",
    "tiny_stories": """
task: tiny_stories
dataset_path: json
dataset_kwargs: {{data_files: {{test: "{data}/stories.jsonl"}}}}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - {{metric: word_perplexity}}
  - {{metric: byte_perplexity}}
  - {{metric: bits_per_byte}}
""",
}


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    paths = []
    for name, text in TASK_YAMLS.items():
        path = folder / f"{name}.yaml"
        path.write_text(text.format(data=DATA))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, task_files):
    run_dir = tmp_path_factory.mktemp("eval_run")
    cfg = compose_cfg("task=eval", "task.tasks=[" + ",".join(map(str, task_files)) + "]", "task.perplexity=true",
                      "data.eval_max_sequences=8")
    return run_dir, execute(cfg, run_dir)


def test_eval_task_equals_lm_eval_hf_model_on_every_request_kind(eval_run, task_files):
    from lm_eval.models.huggingface import HFLM

    from optmodel.backends import hf
    from optmodel.evaluation.harness import evaluate, metrics_of, result_rows, split_task_specs

    _, ours = eval_run
    handle = hf.load(compose_cfg())
    names, include, all_local = split_task_specs(task_files)
    assert all_local
    assert names == ["tiny_arith", "tiny_arith_gen", "tiny_stories"]
    theirs = metrics_of(result_rows(evaluate(HFLM(pretrained=handle.model, tokenizer=handle.tokenizer, batch_size=4),
                                             names, include_paths=include, include_defaults=False)))
    assert set(theirs) == {"tiny_arith/acc", "tiny_arith/acc_norm", "tiny_arith_gen/exact_match",
                           "tiny_stories/word_perplexity", "tiny_stories/byte_perplexity", "tiny_stories/bits_per_byte"}
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-5), key


def test_eval_task_saves_results_and_reports_what_the_model_learned(eval_run):
    run_dir, metrics = eval_run
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "completed" and manifest["task"] == "eval"
    assert manifest["metrics"]["tiny_arith/acc"] == metrics["tiny_arith/acc"]
    saved = json.loads((run_dir / "eval_results.json").read_text())
    assert saved["n-samples"]["tiny_arith"]["effective"] == 16 and saved["n-samples"]["tiny_stories"]["effective"] == 6
    table = (run_dir / "eval_results.md").read_text()
    assert "| tiny_arith | acc | none |" in table and "| tiny_stories | word_perplexity | none |" in table
    # The tiny model was trained on this grammar: far above chance (0.25) on its arithmetic,
    # and the held-out stories are likely text for it.
    assert metrics["tiny_arith/acc"] >= 0.5
    assert 1 < metrics["tiny_stories/word_perplexity"] < 20


def test_eval_perplexity_equals_the_default_runs_metric(eval_run):
    """The reusable perplexity (any backend's forward) gives the quantize task's number."""
    from optmodel.backends import hf
    from optmodel.data.text import dataset_texts, pack
    from optmodel.metrics import perplexity_of

    _, metrics = eval_run
    cfg = compose_cfg("data.eval_max_sequences=8")
    handle = hf.load(cfg)
    heldout = pack(handle.tokenizer, dataset_texts(cfg.data, "eval"), cfg.data.seq_len, 8, "data.eval_path")
    assert metrics["eval_tokens"] == heldout.numel()
    assert metrics["perplexity"] == pytest.approx(perplexity_of(lambda b: handle.model(input_ids=b).logits, heldout, 8, handle.device),
                                                   rel=1e-5)


def test_chat_template_prompts_score_as_lm_eval_hf_model(task_files):
    from lm_eval.models.huggingface import HFLM

    from optmodel.backends import hf
    from optmodel.evaluation.harness import evaluate, metrics_of, result_rows, split_task_specs
    from optmodel.evaluation.lm_adapter import OptmodelLM

    handle = hf.load(compose_cfg())
    names, include, _ = split_task_specs(task_files[:2])  # multiple choice and generation
    kw = dict(include_paths=include, include_defaults=False, limit=8, num_fewshot=2, apply_chat_template=True)
    ours = metrics_of(result_rows(evaluate(OptmodelLM(handle, batch_size=4), names, **kw)))
    theirs = metrics_of(result_rows(evaluate(HFLM(pretrained=handle.model, tokenizer=handle.tokenizer, batch_size=4),
                                             names, **kw)))
    assert ours == pytest.approx(theirs, rel=1e-5) and len(ours) == 3


def test_eval_config_problems_are_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("task=eval"))
    assert "task.tasks: no lm-eval task named" in str(err.value)
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("task=eval", f"task.tasks=[{tmp_path}/missing.yaml]", "task.limit=0"))
    assert "task.tasks: task file" in str(err.value) and "task.limit: must be > 0" in str(err.value)


def test_eval_unknown_task_name_fails_before_the_model_loads(tmp_path, monkeypatch):
    import optmodel.tasks.eval.run as eval_task

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(eval_task, "_PREFLIGHT", {})
    with pytest.raises(ConfigError, match=r"task.tasks: unknown value 'hellaswagg'. Did you mean hellaswag"):
        execute(compose_cfg("task=eval", "task.tasks=[hellaswagg]"), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run dir is claimed
    # the task names are cached: the next refusal comes before lm-eval indexes its task tree
    monkeypatch.setattr(eval_task, "task_manager", lambda *a, **k: pytest.fail("lm-eval's task index was rebuilt"))
    with pytest.raises(ConfigError, match=r"unknown value 'gsm8'. Did you mean gsm8k\?"):
        execute(compose_cfg("task=eval", "task.tasks=[gsm8]"), tmp_path / "run")


def test_eval_task_whose_dataset_is_not_local_fails_offline_before_the_model_loads(tmp_path, monkeypatch):
    import optmodel.tasks.eval.run as eval_task

    task_file = tmp_path / "hub_task.yaml"
    task_file.write_text("task: hub_task\ndataset_path: optmodel-tests/never-downloaded\ntest_split: test\n"
                         "output_type: loglikelihood\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n")
    import optmodel.run as run_module

    monkeypatch.setattr(run_module.RunContext, "load_model", lambda self, source=None: pytest.fail("the model must not load"))
    with pytest.raises(ConfigError, match=r"task.tasks: a task's dataset is not available: .*optmodel-tests/never-downloaded"
                                          r".* Fix: run the task once where there is network"):
        execute(compose_cfg("task=eval", f"task.tasks=[{task_file}]"), tmp_path / "run")


# --- task=generate --------------------------------------------------------------------------
PROMPTS = ["Eleven plus eighteen is", "On a cold Friday, Wendy went to the", "Grace had two eggs."]


def test_greedy_generation_equals_transformers_generate(tmp_path):
    import torch

    from optmodel.backends import hf

    cfg = compose_cfg("task=generate", "task.prompts=[" + ",".join(f"'{p}'" for p in PROMPTS) + "]",
                      "task.max_new_tokens=12", "task.batch_size=2")
    metrics = execute(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == PROMPTS and metrics["prompts"] == 3
    handle = hf.load(cfg)
    tok = handle.tokenizer
    for row in rows:  # each prompt alone, no padding: transformers' own greedy decoding
        ids = torch.tensor([tok.encode(row["prompt"])])
        out = handle.model.generate(input_ids=ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        assert row["completion"] == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert rows[0]["completion"].strip().startswith("twenty")
    assert read_manifest(tmp_path)["outputs"]["generations"].endswith("generations.jsonl")


def test_sampling_from_a_prompts_file_is_seeded(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    args = ("task=generate", f"task.prompts_file={prompts}", "task.do_sample=true", "task.temperature=1.5",
            "task.top_k=50", "task.top_p=0.95", "task.max_new_tokens=16")
    outs = []
    for i, seed in enumerate((1, 1, 2)):
        execute(compose_cfg(*args, f"run.seed={seed}"), tmp_path / f"run{i}")
        outs.append([json.loads(line)["completion"] for line in (tmp_path / f"run{i}" / "generations.jsonl").read_text().splitlines()])
    assert outs[0] == outs[1], "the same seed samples the same text"
    assert outs[0] != outs[2], "another seed samples other text"


def test_generate_config_problems_are_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg("task=generate", "task.prompts=[]", "task.do_sample=true", "task.temperature=0",
                             "task.top_p=1.5"))
    msg = str(err.value)
    assert "task.prompts: no prompt given" in msg and "task.temperature: sampling needs a temperature > 0" in msg
    assert "task.top_p: must be in (0, 1]" in msg
    with pytest.raises(ConfigError, match="task.prompts_file: .* does not exist"):
        validate(compose_cfg("task=generate", f"task.prompts_file={tmp_path}/none.txt"))
