"""MMLU (`cais/mmlu`): find the data, build one lm-eval task per subject, score.

Matches the Megatron-LM ModelOpt example so numbers compare: the prompt
"The following are multiple choice questions (with answers) about <subject>.\\n\\n"
+ question + "\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:", 0-shot by default (few-shot examples: the
first ones of the subject's dev split), and the answer is the letter among A/B/C/D with
the highest log-likelihood after the prompt. `fraction` keeps the first ceil(fraction x n)
questions of each subject. The overall figure is the micro average over all questions.

Data: a directory in the `cais/mmlu` repository layout (<subject>/test-*.parquet and
dev-*.parquet, or all/test-*.parquet + all/dev-*.parquet with a `subject` column), else
that dataset in the local Hugging Face hub cache. Nothing is downloaded.

Data location and option checks: optmodel.data.mmlu (light, used by validation).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Dict, List, Tuple

from optmodel.data.mmlu import (  # noqa: F401  (re-exported: the scoring side's vocabulary)
    HF_DATASET, SUBJECTS, MmluDataError, MmluOptions, locate,
)
from optmodel.evaluation.harness import evaluate
from optmodel.facts.errors import AccuracyBelowBound

LETTERS = ["A", "B", "C", "D"]
DOC_TO_TEXT = "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"


@dataclass
class MmluResult:
    subjects: Dict[str, Tuple[int, int]]  # subject -> (correct, questions)
    num_fewshot: int
    fraction: float

    @property
    def correct(self) -> int:
        return sum(c for c, _ in self.subjects.values())

    @property
    def questions(self) -> int:
        return sum(n for _, n in self.subjects.values())

    @property
    def accuracy(self) -> float:  # micro average: every question counts once
        return self.correct / self.questions

    @property
    def macro_accuracy(self) -> float:  # every subject counts once
        return sum(c / n for c, n in self.subjects.values()) / len(self.subjects)

    def subject_accuracy(self) -> Dict[str, float]:
        return {s: c / n for s, (c, n) in self.subjects.items()}

    def table(self) -> str:
        lines = [f"{'subject':48}| acc   | correct/total"]
        for subject, (c, n) in self.subjects.items():
            lines.append(f"{subject:48}| {c / n:.3f} | {c:5}/{n:5}")
        lines.append(f"{'average (micro, all questions)':48}| {self.accuracy:.3f} | {self.correct:5}/{self.questions:5}")
        lines.append(f"{'average (macro, per subject)':48}| {self.macro_accuracy:.3f} |")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "accuracy": self.accuracy, "macro_accuracy": self.macro_accuracy, "correct": self.correct,
            "questions": self.questions, "num_fewshot": self.num_fewshot, "fraction": self.fraction,
            "subjects": {s: {"accuracy": c / n, "correct": c, "questions": n} for s, (c, n) in self.subjects.items()},
        }


# --- lm-eval tasks and scoring --------------------------------------------------------------
def _only_subject(dataset, subject: str):
    return dataset.filter(lambda doc: doc["subject"] == subject)


def task_name(subject: str) -> str:
    return f"optmodel_mmlu_{subject}"


def task_configs(sources: Dict[str, dict], num_fewshot: int) -> List[dict]:
    """One lm-eval multiple-choice task per subject, over the local parquet files."""
    configs = []
    for subject, files in sources.items():
        config = {
            "task": task_name(subject),
            "task_alias": subject,
            "dataset_path": "parquet",
            "dataset_kwargs": {"data_files": {"test": files["test"], "dev": files["dev"]}},
            "test_split": "test",
            "fewshot_split": "dev",
            "fewshot_config": {"sampler": "first_n"},
            "num_fewshot": num_fewshot,
            "output_type": "multiple_choice",
            "description": f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n",
            "doc_to_text": DOC_TO_TEXT,
            "doc_to_choice": LETTERS,
            "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0},
        }
        if files["filter"]:
            config["process_docs"] = functools.partial(_only_subject, subject=subject)
        configs.append(config)
    return configs


def scores_from(results: dict, subjects, num_fewshot: int, fraction: float) -> MmluResult:
    per_subject = {}
    for subject in subjects:
        name = task_name(subject)
        n = int(results["n-samples"][name]["effective"])
        acc = float(results["results"][name]["acc,none"])
        per_subject[subject] = (round(acc * n), n)
    return MmluResult(subjects=per_subject, num_fewshot=num_fewshot, fraction=fraction)


def run_mmlu(lm, opts: MmluOptions, seed: int = 1234) -> MmluResult:
    """MMLU through lm-eval on any lm-eval LM (optmodel's adapter, or lm-eval's own)."""
    _, sources = locate(opts)
    results = evaluate(lm, task_configs(sources, opts.num_fewshot),
                       limit=None if opts.fraction >= 1 else opts.fraction, include_defaults=False, seed=seed)
    return scores_from(results, list(sources), opts.num_fewshot, opts.fraction)


def check_lower_bound(result: MmluResult, opts: MmluOptions, what: str = "MMLU accuracy") -> None:
    if opts.lower_bound is not None and result.accuracy < opts.lower_bound:
        raise AccuracyBelowBound(
            f"{opts.field_prefix}lower_bound: {what} {result.accuracy:.4f} ({result.correct}/{result.questions} "
            f"questions, {len(result.subjects)} subjects) is below the lower bound {opts.lower_bound}."
        )
