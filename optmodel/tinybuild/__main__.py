"""python -m optmodel.tinybuild [--out DIR] [--only PART]"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List, Optional, Sequence

from optmodel.tinybuild import __doc__ as DOC
from optmodel.tinybuild.constants import DEFAULT_OUT, MODEL_NAMES, PARTS
from optmodel.tinybuild.corpus import build_corpus
from optmodel.tinybuild.models import build_model
from optmodel.tinybuild.tokenizer import build_tokenizer


def build(out: Path = DEFAULT_OUT, only: Optional[str] = None) -> List[dict]:
    """Build ``only`` (a part name) or everything into ``out``; returns the model reports."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = PARTS if only is None else (only,)
    have_corpus = (out / "corpus" / "train.txt").exists() and (out / "corpus" / "heldout.txt").exists()
    have_tokenizer = (out / "tokenizer" / "tokenizer.json").exists()
    if "corpus" in parts or not have_corpus:
        build_corpus(out)
    if "tokenizer" in parts or not have_tokenizer:
        build_tokenizer(out)
    return [build_model(name, out) for name in parts if name in MODEL_NAMES]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=DOC.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--only", choices=PARTS, default=None, help="build one part only")
    args = parser.parse_args(argv)
    reports = build(args.out, args.only)
    for r in reports:
        print(f"  {r['name']:>15}: {r['train_seconds']:6.1f} s  ppl {r['heldout_ppl']:7.3f}  {r['size_kib']} KiB")


if __name__ == "__main__":
    main()
