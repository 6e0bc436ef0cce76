"""Where MMLU data is (`cais/mmlu` layout, or the local Hugging Face cache) and whether the
options asking for it make sense. Reads file listings only: validation calls it before any
model loads. Scoring lives in optmodel.evaluation.mmlu."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from optmodel.facts.errors import one_of

SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics", "econometrics",
    "electrical_engineering", "elementary_mathematics", "formal_logic", "global_facts",
    "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics",
    "high_school_physics", "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law", "jurisprudence",
    "logical_fallacies", "machine_learning", "management", "marketing", "medical_genetics", "miscellaneous",
    "moral_disputes", "moral_scenarios", "nutrition", "philosophy", "prehistory", "professional_accounting",
    "professional_law", "professional_medicine", "professional_psychology", "public_relations",
    "security_studies", "sociology", "us_foreign_policy", "virology", "world_religions",
)
HF_DATASET = "cais/mmlu"
HOW_TO_GET = (
    "Fix: on a machine with network, `hf download cais/mmlu --repo-type dataset "
    "--local-dir DIR` (or `python -c \"import datasets; datasets.load_dataset('cais/mmlu', 'all')\"`, "
    "which fills the Hugging Face cache), copy DIR here and set {field}=DIR."
)


class MmluDataError(ValueError):
    pass


@dataclass
class MmluOptions:
    data_dir: Optional[str] = None
    subjects: List[str] = field(default_factory=list)  # empty: all 57
    num_fewshot: int = 0
    fraction: float = 1.0
    batch_size: int = 8
    lower_bound: Optional[float] = None
    field_prefix: str = "task."  # where these options live in the run config, for messages

    @classmethod
    def from_cfg(cls, node, field_prefix: str) -> "MmluOptions":
        return cls(data_dir=node.data_dir, subjects=list(node.subjects), num_fewshot=int(node.num_fewshot),
                   fraction=float(node.fraction), batch_size=int(node.batch_size),
                   lower_bound=node.lower_bound, field_prefix=field_prefix)


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def cached_snapshots() -> List[Path]:
    """Snapshots of cais/mmlu in the local hub cache, newest first."""
    root = hub_cache_dir() / ("datasets--" + HF_DATASET.replace("/", "--")) / "snapshots"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)


def _split_files(folder: Path, split: str) -> List[str]:
    return sorted(str(p) for p in folder.glob(f"{split}-*.parquet"))


def subject_sources(root: Path, subjects) -> Tuple[Dict[str, dict], List[str]]:
    """subject -> {"test": files, "dev": files, "filter": bool}, and the subjects not found."""
    found, missing = {}, []
    combined = {s: _split_files(root / "all", s) for s in ("test", "dev")}
    for subject in subjects:
        own = {s: _split_files(root / subject, s) for s in ("test", "dev")}
        if own["test"] and own["dev"]:
            found[subject] = {**own, "filter": False}
        elif combined["test"] and combined["dev"]:
            found[subject] = {**combined, "filter": True}  # all/ files: keep this subject's rows
        else:
            missing.append(subject)
    return found, missing


def locate(opts: MmluOptions) -> Tuple[Path, Dict[str, dict]]:
    """The data root and per-subject files, or MmluDataError saying how to provide them."""
    subjects = list(opts.subjects) or list(SUBJECTS)
    field_name = f"{opts.field_prefix}data_dir"
    if opts.data_dir:
        root = Path(opts.data_dir).expanduser()
        if not root.is_dir():
            raise MmluDataError(f"{field_name}: {root} is not a directory. " + HOW_TO_GET.format(field=field_name))
        candidates = [root]
    else:
        candidates = cached_snapshots()
        if not candidates:
            raise MmluDataError(
                f"{field_name}: no MMLU data: {field_name} is not set and {HF_DATASET} is not in the Hugging Face "
                f"cache ({hub_cache_dir()}); nothing is downloaded. " + HOW_TO_GET.format(field=field_name)
            )
    best = None
    for root in candidates:
        found, missing = subject_sources(root, subjects)
        if not missing:
            return root, found
        if best is None or len(missing) < len(best[2]):
            best = (root, found, missing)
    root, _, missing = best
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    raise MmluDataError(
        f"{field_name}: {root} lacks {len(missing)} of the {len(subjects)} MMLU subjects asked for ({shown}): "
        f"each needs <subject>/test-*.parquet and <subject>/dev-*.parquet (or all/test-*.parquet and "
        f"all/dev-*.parquet) as in the {HF_DATASET} repository. Fix: point {field_name} at a complete download, "
        f"or evaluate only the subjects present with {opts.field_prefix}subjects=[...]."
    )


def data_problems(opts: MmluOptions) -> List[str]:
    """Config problems of the MMLU options (validation; reads only the file listing)."""
    p = opts.field_prefix
    problems = [q for s in opts.subjects if (q := one_of(f"{p}subjects", s, SUBJECTS))]
    if not 0 < opts.fraction <= 1:
        problems.append(f"{p}fraction: must be in (0, 1] (the share of each subject's questions), got {opts.fraction}.")
    if opts.num_fewshot < 0 or opts.num_fewshot > 5:
        problems.append(f"{p}num_fewshot: MMLU's dev split holds 5 examples per subject, got {opts.num_fewshot}. "
                        f"Fix: 0 (default) to 5.")
    if opts.batch_size < 1:
        problems.append(f"{p}batch_size: must be >= 1, got {opts.batch_size}.")
    if opts.lower_bound is not None and not 0 <= opts.lower_bound <= 1:
        problems.append(f"{p}lower_bound: an accuracy in [0, 1], got {opts.lower_bound}.")
    if not problems:
        try:
            locate(opts)
        except MmluDataError as err:
            problems.append(str(err))
    return problems
