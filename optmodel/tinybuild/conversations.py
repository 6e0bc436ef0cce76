"""The bundled EAGLE3 conversation set: grammar questions, answered by the tiny target.

python -m optmodel.tinybuild.conversations [--out FILE] [--model DIR]

User turns come from the corpus grammar (a question per paragraph kind); each assistant
turn is the tiny target's own greedy answer (64 new tokens at most). A draft learns to
predict the target, so the target's own answers are the text it will see at serving time.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Dict, List

from optmodel.tinybuild.constants import DEFAULT_OUT
from optmodel.tinybuild.corpus import ANIMALS, DAYS, OBJECTS, PEOPLE, PLACES, WEATHER, number_word

SEED = 4242
COUNT = 320
MAX_NEW_TOKENS = 64


def questions(rng: random.Random, count: int) -> List[str]:
    people, out = list(PEOPLE), []
    makers = [
        lambda: f"Tell me a story about {rng.choice(people)}.",
        lambda: f"What did {rng.choice(people)} do at the {rng.choice(PLACES)}?",
        lambda: f"What is {number_word(rng.randint(0, 10))} plus {number_word(rng.randint(0, 10))}?",
        lambda: f"Where is the {rng.choice(OBJECTS)}?",
        lambda: f"What will the weather be at the {rng.choice(PLACES)} on {rng.choice(DAYS)}?",
        lambda: f"Describe the {rng.choice(ANIMALS)}.",
        lambda: f"Count from {number_word(rng.randint(1, 12))}.",
        lambda: f"Is it {rng.choice(WEATHER)} today?",
    ]
    while len(out) < count:
        out.append(rng.choice(makers)())
    return out


def answer_all(model_dir: Path, prompts: List[str]) -> List[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    answers = []
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        answers.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return answers


def build(out: Path, model_dir: Path) -> None:
    prompts = questions(random.Random(SEED), COUNT)
    rows: List[Dict] = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}
        for p, a in zip(prompts, answer_all(model_dir, prompts))
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / "speculative" / "conversations.jsonl")
    parser.add_argument("--model", type=Path, default=DEFAULT_OUT / "tiny_models" / "tiny_qwen3")
    args = parser.parse_args()
    build(args.out, args.model)


if __name__ == "__main__":
    main()
