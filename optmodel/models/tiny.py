"""Build the bundled corpus, tokenizer and four trained tiny models.

Everything under ``optmodel/assets/`` is produced by this script, deterministically:

1. ``corpus/train.txt`` (~500 KB) and ``corpus/heldout.txt`` (~50 KB): English text written
   by a seeded template grammar (people, animals, places, objects, colours, numbers,
   arithmetic facts, weather, dialogues and short stories). License-clean: nothing is copied
   from anywhere. Paragraphs of 3-6 sentences are separated by blank lines; the held-out
   file uses another seed and the same distribution.
2. ``tokenizer/``: a byte-level BPE (vocab 1024) trained with ``tokenizers`` on train.txt,
   wrapped in ``transformers.PreTrainedTokenizerFast`` (``<|bos|>``, ``<|eos|>``,
   ``<|pad|>``, ``<|unk|>``, chat-role tokens and a minimal chat template).
3. ``tiny_models/<name>/`` for ``tiny_qwen3``, ``tiny_llama``, ``tiny_qwen3_moe`` and
   ``tiny_deepseek`` (MLA + MoE): ordinary Hugging Face checkpoints (bfloat16 safetensors,
   config.json, generation_config.json, tokenizer files, ``train_info.json``), each trained
   from scratch on train.txt. Every ``nn.Linear`` has ``in_features % 128 == 0`` (ModelOpt's
   INT4 AWQ export needs it); this is asserted before training.

Usage::

    python -m optmodel.models.tiny                      # everything into optmodel/assets
    python -m optmodel.models.tiny --out /tmp/a         # somewhere else
    python -m optmodel.models.tiny --only tiny_llama    # one part (corpus, tokenizer or a model)

A model needs the corpus and tokenizer: ``--only <model>`` builds them first when they are
missing from ``--out``. Training runs in float32 on the CPU with 2 threads and a fixed
number of steps (so the result does not depend on the machine's speed); weights are saved in
bfloat16 and the held-out perplexity is measured on the reloaded bf16 checkpoint in float32.

Time on an idle 2-core CPU: corpus + tokenizer ~3 s, each model ~65-80 s of training plus a few
seconds of evaluation; about 5 minutes for everything. Bit-for-bit reproducibility holds on
the same machine / torch build (floating-point kernels may differ across CPUs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "assets"

TRAIN_SEED = 20240601
HELDOUT_SEED = 777
TRAIN_BYTES = 500_000
HELDOUT_BYTES = 50_000

VOCAB_SIZE = 1024
BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [BOS, EOS, PAD, UNK, *ROLE_TOKENS]  # ids 0..6, in this order
# One turn per message: "<|role|>\n{content}<|eos|>\n". The {% generation %} markers let
# `apply_chat_template(..., return_assistant_tokens_mask=True)` find the assistant tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

MODEL_NAMES = ("tiny_qwen3", "tiny_llama", "tiny_qwen3_moe", "tiny_deepseek")
PARTS = ("corpus", "tokenizer", *MODEL_NAMES)
LINEAR_IN_MULTIPLE = 128
EVAL_WINDOW = 256
NUM_THREADS = 2


# --------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------

PEOPLE = {
    "Anna": "she", "Ben": "he", "Clara": "she", "David": "he", "Emma": "she", "Finn": "he",
    "Grace": "she", "Henry": "he", "Ivy": "she", "Jack": "he", "Kate": "she", "Leo": "he",
    "Mia": "she", "Noah": "he", "Olivia": "she", "Paul": "he", "Rosa": "she", "Sam": "he",
    "Tina": "she", "Victor": "he", "Wendy": "she", "Omar": "he", "Lucy": "she", "Max": "he",
}
POSSESSIVE = {"he": "his", "she": "her"}
OBJECT_PRONOUN = {"he": "him", "she": "her"}
ANIMALS = ["cat", "dog", "bird", "fox", "rabbit", "horse", "cow", "duck", "frog", "mouse",
           "bear", "goat", "sheep", "owl", "fish", "pig"]
ANIMAL_SOUNDS = {"cat": "meows", "dog": "barks", "bird": "sings", "fox": "yelps",
                 "rabbit": "is quiet", "horse": "neighs", "cow": "moos", "duck": "quacks",
                 "frog": "croaks", "mouse": "squeaks", "bear": "growls", "goat": "bleats",
                 "sheep": "bleats", "owl": "hoots", "fish": "is quiet", "pig": "oinks"}
PLACES = ["garden", "park", "kitchen", "forest", "river", "school", "market", "library",
          "beach", "farm", "village", "hill", "station", "bakery", "lake", "field"]
OBJECTS = ["ball", "book", "cup", "hat", "box", "kite", "apple", "lamp", "chair", "key",
           "bag", "boat", "coat", "pencil", "basket", "bell", "shoe", "flower"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "brown", "orange", "purple",
           "grey", "pink"]
SIZES = ["big", "small", "old", "new", "little", "heavy", "light"]
FEELINGS = ["happy", "sad", "tired", "hungry", "sleepy", "excited", "calm", "cold"]
WEATHER = ["sunny", "rainy", "cloudy", "windy", "cold", "warm", "foggy", "snowy"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["morning", "afternoon", "evening", "night"]
SEASONS = ["spring", "summer", "autumn", "winter"]
FOODS = ["bread", "soup", "rice", "cake", "cheese", "apples", "carrots", "eggs", "milk"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
                "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
TENS = {2: "twenty", 3: "thirty", 4: "forty"}
FACTS = [
    "the sky is blue on a clear day", "grass is green", "snow is white", "the sun is hot",
    "fish live in water", "birds can fly", "a week has seven days", "ice is cold",
    "a cat has four legs", "a bird has two legs", "the moon shines at night",
    "bees make honey", "cows give milk", "trees grow from seeds", "rain falls from clouds",
]


def number_word(n: int) -> str:
    """English words for 0..49 ("thirty-seven")."""
    if n <= 20:
        return NUMBER_WORDS[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] if ones == 0 else f"{TENS[tens]}-{NUMBER_WORDS[ones]}"


def _cap(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _plural(noun: str, n: int) -> str:
    if n == 1 or noun in ("fish", "sheep"):
        return noun
    if noun == "mouse":
        return "mice"
    if noun.endswith(("x", "sh", "ch")):
        return noun + "es"
    return noun + "s"


class _Grammar:
    """Paragraph generators of a small template grammar; every choice comes from ``rng``."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.paragraph_kinds: List[Callable[[], List[str]]] = [
            self.story, self.story, self.story, self.arithmetic, self.counting_story,
            self.description, self.weather, self.dialogue, self.animals, self.facts,
        ]

    def pick(self, seq: Sequence):
        return self.rng.choice(seq)

    def person(self, exclude: Sequence[str] = ()) -> str:
        return self.pick([p for p in PEOPLE if p not in exclude])

    def thing(self) -> str:
        r = self.rng.random()
        obj = self.pick(OBJECTS)
        if r < 0.4:
            return f"{self.pick(COLOURS)} {obj}"
        if r < 0.6:
            return f"{self.pick(SIZES)} {obj}"
        return obj

    # -- paragraph kinds --------------------------------------------------------------

    def story(self) -> List[str]:
        rng = self.rng
        name = self.person()
        pron = PEOPLE[name]
        friend = self.person(exclude=[name])
        place, place2 = rng.sample(PLACES, 2)
        thing = self.thing()
        animal = self.pick(ANIMALS)
        openings = [
            f"On a {self.pick(WEATHER)} {self.pick(DAYS)}, {name} went to the {place}.",
            f"One {self.pick(TIMES)}, {name} walked to the {place}.",
            f"In the {self.pick(SEASONS)}, {name} lived near the {place}.",
            f"{name} was {self.pick(FEELINGS)} and went to the {place}.",
        ]
        middles = [
            f"{_cap(pron)} saw {_a(self.pick(COLOURS) + ' ' + animal)} near the {place2}.",
            f"There {pron} found {_a(thing)}.",
            f"{_cap(pron)} met {friend} at the {place}.",
            f"{friend} gave {OBJECT_PRONOUN[pron]} {_a(thing)}.",
            f"The {animal} was {self.pick(FEELINGS)}.",
            f"{_cap(pron)} ate some {self.pick(FOODS)}.",
            f"{name} and {friend} played with the {thing.split()[-1]}.",
            f"{_cap(pron)} put {POSSESSIVE[pron]} {thing} in the {self.pick(OBJECTS)}.",
            f"It started to rain, so {pron} went inside.",
            f"The {animal} ran to the {place2}.",
        ]
        endings = [
            f"Then {pron} walked home.",
            f"At night {pron} was {self.pick(FEELINGS)}.",
            f"{name} smiled.",
            f"Later {name} told {friend} about the {animal}.",
            f"It was a good day for {name}.",
        ]
        body = rng.sample(middles, rng.randint(1, 4))
        return [self.pick(openings), *body, self.pick(endings)]

    def arithmetic(self) -> List[str]:
        rng = self.rng
        out = []
        for _ in range(rng.randint(3, 6)):
            op = rng.random()
            if op < 0.45:
                a, b = rng.randint(0, 20), rng.randint(0, 20)
                s = f"{number_word(a)} plus {number_word(b)} is {number_word(a + b)}."
            elif op < 0.8:
                a = rng.randint(0, 20)
                b = rng.randint(0, a)
                s = f"{number_word(a)} minus {number_word(b)} is {number_word(a - b)}."
            else:
                a, b = rng.randint(0, 7), rng.randint(0, 7)
                s = f"{number_word(a)} times {number_word(b)} is {number_word(a * b)}."
            out.append(_cap(s))
        return out

    def counting_story(self) -> List[str]:
        rng = self.rng
        name = self.person()
        pron = PEOPLE[name]
        friend = self.person(exclude=[name])
        noun = self.pick(["apple", "ball", "book", "cup", "pencil", "flower", "egg", "shoe"])
        a, b = rng.randint(1, 12), rng.randint(1, 8)
        out = [f"{name} had {number_word(a)} {_plural(noun, a)}."]
        if rng.random() < 0.5:
            out.append(f"{friend} gave {OBJECT_PRONOUN[pron]} {number_word(b)} more.")
            out.append(f"Now {name} has {number_word(a + b)} {_plural(noun, a + b)}.")
        else:
            b = rng.randint(0, a)
            out.append(f"{_cap(pron)} gave {number_word(b)} to {friend}.")
            out.append(f"Now {name} has {number_word(a - b)} {_plural(noun, a - b)}.")
        if rng.random() < 0.5:
            out.append(f"{friend} counted them again.")
        return out

    def description(self) -> List[str]:
        rng = self.rng
        place = self.pick(PLACES)
        out = [f"The {place} is {self.pick(['quiet', 'busy', 'warm', 'cold', 'bright', 'dark', 'clean', 'big', 'small'])}."]
        for _ in range(rng.randint(2, 5)):
            n = rng.randint(1, 9)
            noun = self.pick(OBJECTS + ANIMALS)
            colour = self.pick(COLOURS)
            verb = "is" if n == 1 else "are"
            where = self.pick(["on the table", "by the door", "under the chair",
                               "near the window", "in the corner", "on the floor"])
            out.append(f"There {verb} {number_word(n)} {colour} {_plural(noun, n)} {where}.")
        return out

    def weather(self) -> List[str]:
        rng = self.rng
        place = self.pick(PLACES + ["town", "city"])
        w1, w2 = rng.sample(WEATHER, 2)
        t = rng.randint(0, 30)
        when = self.pick(["in the morning", "in the afternoon", "in the evening", "at night"])
        out = [f"Today the weather at the {place} is {w1}.",
               f"It is {number_word(t)} {'degree' if t == 1 else 'degrees'} {when}."]
        if rng.random() < 0.7:
            out.append(f"Tomorrow it will be {w2}.")
        if rng.random() < 0.6:
            d = self.pick(DAYS)
            out.append(f"On {d} it will be {self.pick(WEATHER)} again.")
        if w1 in ("rainy", "snowy", "cold", "windy"):
            who = self.person()
            out.append(f"{who} wore {POSSESSIVE[PEOPLE[who]]} {self.pick(COLOURS)} coat.")
        return out

    def dialogue(self) -> List[str]:
        rng = self.rng
        a = self.person()
        b = self.person(exclude=[a])
        thing = self.thing()
        place = self.pick(PLACES)
        out = [f'{a} asked {b}, "where is the {thing}?"',
               f'{b} said, "the {thing} is in the {place}."']
        if rng.random() < 0.6:
            x, y = rng.randint(0, 10), rng.randint(0, 10)
            out.append(f'{a} asked, "what is {number_word(x)} plus {number_word(y)}?"')
            out.append(f'{b} said, "{number_word(x)} plus {number_word(y)} is {number_word(x + y)}."')
        if rng.random() < 0.5:
            out.append(f'"Thank you," said {a}.')
        return out

    def animals(self) -> List[str]:
        rng = self.rng
        out = []
        for animal in rng.sample(ANIMALS, rng.randint(3, 5)):
            r = rng.random()
            if r < 0.4:
                out.append(f"The {animal} {ANIMAL_SOUNDS[animal]}.")
            elif r < 0.7:
                out.append(f"The {self.pick(COLOURS)} {animal} lives on the {self.pick(['farm', 'hill', 'river', 'field', 'lake'])}.")
            else:
                n = rng.randint(2, 9)
                out.append(f"{number_word(n).capitalize()} {_plural(animal, n)} sleep in the {self.pick(PLACES)}.")
        return out

    def facts(self) -> List[str]:
        rng = self.rng
        out = [_cap(f) + "." for f in rng.sample(FACTS, rng.randint(2, 3))]
        start = rng.randint(1, 12)
        length = rng.randint(3, 6)
        out.append(_cap(", ".join(number_word(i) for i in range(start, start + length))) + ".")
        if rng.random() < 0.5:
            i = rng.randint(0, 6)
            out.append(f"After {DAYS[i]} comes {DAYS[(i + 1) % 7]}.")
        return out

    def paragraph(self) -> str:
        return " ".join(self.pick(self.paragraph_kinds)())


def generate_corpus(seed: int, target_bytes: int) -> str:
    """Paragraphs from the template grammar, separated by blank lines, until ``target_bytes``."""
    grammar = _Grammar(random.Random(seed))
    paragraphs: List[str] = []
    size = 0
    while size < target_bytes:
        p = grammar.paragraph()
        paragraphs.append(p)
        size += len(p.encode()) + 2
    return "\n\n".join(paragraphs) + "\n"


def build_corpus(out: Path) -> None:
    corpus_dir = out / "corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for name, seed, size in (("train", TRAIN_SEED, TRAIN_BYTES), ("heldout", HELDOUT_SEED, HELDOUT_BYTES)):
        text = generate_corpus(seed, size)
        (corpus_dir / f"{name}.txt").write_text(text, encoding="utf-8")
        print(f"corpus/{name}.txt: {len(text.encode()) / 1024:.0f} KiB, {text.count(chr(10) + chr(10)) + 1} paragraphs")


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------

def build_tokenizer(out: Path):
    """Byte-level BPE (vocab 1024) on train.txt, saved as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    train_text = (out / "corpus" / "train.txt").read_text(encoding="utf-8")
    paragraphs = train_text.split("\n\n")

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(paragraphs, trainer=trainer, length=len(paragraphs))
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    tok_dir = out / "tokenizer"
    save_tokenizer(wrapped, tok_dir)
    n_tokens = sum(len(ids) for ids in wrapped(paragraphs, add_special_tokens=False)["input_ids"])
    print(f"tokenizer: vocab {len(wrapped)}, {n_tokens} train tokens ({len(train_text) / n_tokens:.2f} bytes/token)")
    return wrapped


def save_tokenizer(tokenizer, directory: Path) -> None:
    """save_pretrained, then pin ``tokenizer_class`` so transformers 4.x and 5.x both load it."""
    tokenizer.save_pretrained(str(directory))
    cfg_path = directory / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.setdefault("chat_template", CHAT_TEMPLATE)  # older transformers read it from here
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def load_tokenizer(out: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(out / "tokenizer"))


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainSpec:
    steps: int
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_frac: float = 0.06
    weight_decay: float = 0.01
    doc_format_frac: float = 0.25  # rows as <|bos|>paragraph<|eos|>... instead of raw text
    seed: int = 0


# Step counts measured to keep each model's training near 80 s on a 2-core CPU
# (s/step: qwen3 ~0.21, llama ~0.19, qwen3_moe ~0.24, deepseek ~0.35).
TRAIN_SPECS: Dict[str, TrainSpec] = {
    "tiny_qwen3": TrainSpec(steps=350, seed=1),
    "tiny_llama": TrainSpec(steps=400, seed=2),
    "tiny_qwen3_moe": TrainSpec(steps=300, seed=3),
    "tiny_deepseek": TrainSpec(steps=200, seed=4),
}


def _special_ids(tokenizer) -> dict:
    return dict(
        vocab_size=VOCAB_SIZE,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=1024,
    )


def model_config(name: str, tokenizer):
    """The transformers config of one tiny model."""
    import torch
    from transformers import DeepseekV3Config, LlamaConfig, Qwen3Config, Qwen3MoeConfig

    common = _special_ids(tokenizer)
    attn = dict(num_hidden_layers=4, hidden_size=128, num_attention_heads=4)
    if name == "tiny_qwen3":
        cfg = Qwen3Config(
            **common, **attn, intermediate_size=384, num_key_value_heads=2, head_dim=32,
            tie_word_embeddings=False, rope_theta=1e6, rms_norm_eps=1e-6,
        )
    elif name == "tiny_llama":
        cfg = LlamaConfig(
            **common, **attn, intermediate_size=384, num_key_value_heads=2, head_dim=32,
            tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 256},
        )
    elif name == "tiny_qwen3_moe":
        cfg = Qwen3MoeConfig(
            **common, **attn, intermediate_size=384, num_key_value_heads=2, head_dim=32,
            num_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
            norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
            tie_word_embeddings=False, router_aux_loss_coef=0.001, rope_theta=1e6,
            rms_norm_eps=1e-6,
        )
    elif name == "tiny_deepseek":
        # transformers 5.x DeepseekV3Config: routing is always sigmoid (no `scoring_func`
        # attribute) with an `e_score_correction_bias` buffer; rope via `rope_theta`.
        cfg = DeepseekV3Config(
            **common, **attn, intermediate_size=384, first_k_dense_replace=1,
            num_key_value_heads=4, q_lora_rank=128, kv_lora_rank=128,
            qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=32,
            n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
            n_shared_experts=1, n_group=1, topk_group=1, routed_scaling_factor=2.5,
            norm_topk_prob=True, rope_theta=10000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=False,
        )
    else:
        raise ValueError(f"unknown tiny model {name!r}; choose from {MODEL_NAMES}")
    cfg.dtype = torch.bfloat16
    return cfg


def check_linear_in_features(model, multiple: int = LINEAR_IN_MULTIPLE) -> List[str]:
    """Names of every nn.Linear (and fused 3-D expert weight) whose input size is not a
    multiple of ``multiple``. Fused experts are [experts, out, in]: ModelOpt unfuses them."""
    import torch.nn as nn

    bad = [f"{n} (in_features={m.in_features})" for n, m in model.named_modules()
           if isinstance(m, nn.Linear) and m.in_features % multiple]
    bad += [f"{n} (shape={tuple(p.shape)})" for n, p in model.named_parameters()
            if p.dim() == 3 and p.shape[-1] % multiple]
    return bad


def add_legacy_config_keys(model_dir: Path) -> None:
    """Add the transformers 4.x spellings to config.json: ``torch_dtype``, ``rope_theta`` and
    ``rope_scaling`` (5.x writes only ``dtype`` / ``rope_parameters`` and reads both; the
    loaded 5.x config is unchanged). DeepSeek-V3 also gets ``scoring_func`` / ``topk_method``
    as in the released DeepSeek-V3 and Kimi-K2 config.json (5.x always routes with sigmoid
    scores plus ``e_score_correction_bias``, which is what these two keys describe)."""
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    cfg["torch_dtype"] = cfg.get("dtype", "bfloat16")
    rope = dict(cfg.get("rope_parameters") or {})
    if rope:
        cfg["rope_theta"] = rope.pop("rope_theta")
        cfg["rope_scaling"] = rope if rope.get("rope_type", "default") != "default" else None
    if cfg.get("model_type") == "deepseek_v3":
        cfg.setdefault("scoring_func", "sigmoid")
        cfg.setdefault("topk_method", "noaux_tc")
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _token_streams(tokenizer, text: str):
    """(raw stream, document stream) as int64 tensors: raw is the text as-is; document is
    ``<|bos|> paragraph <|eos|>`` per paragraph (so the models also know bos/eos)."""
    import torch

    paragraphs = text.strip("\n").split("\n\n")
    ids = tokenizer(paragraphs, add_special_tokens=False)["input_ids"]
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    raw: List[int] = []
    doc: List[int] = []
    for p in ids:
        raw += p + sep
        doc += [tokenizer.bos_token_id] + p + [tokenizer.eos_token_id]
    return torch.tensor(raw, dtype=torch.long), torch.tensor(doc, dtype=torch.long)


def _batches(raw, doc, spec: TrainSpec):
    """Yield ``spec.steps`` batches of random windows, drawn from a seeded generator."""
    import torch

    g = torch.Generator().manual_seed(spec.seed)
    L = spec.seq_len
    n_doc = round(spec.batch_size * spec.doc_format_frac)
    for _ in range(spec.steps):
        rows = []
        for i in range(spec.batch_size):
            src = doc if i < n_doc else raw
            start = int(torch.randint(0, len(src) - L, (1,), generator=g))
            rows.append(src[start:start + L])
        yield torch.stack(rows)


def _lr_lambda(spec: TrainSpec):
    warmup = max(1, int(spec.steps * spec.warmup_frac))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, spec.steps - warmup)
        return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def train_model(model, raw, doc, spec: TrainSpec, desc: str = "train") -> float:
    """Causal-LM training in float32; returns the mean loss of the last 20 steps."""
    import torch
    from tqdm import tqdm

    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(spec))
    is_moe = getattr(model.config, "router_aux_loss_coef", 0) > 0
    losses: List[float] = []
    bar = tqdm(_batches(raw, doc, spec), total=spec.steps, desc=desc, unit="step")
    for batch in bar:
        kwargs = {"output_router_logits": True} if is_moe else {}
        out = model(input_ids=batch, labels=batch, use_cache=False, **kwargs)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{sched.get_last_lr()[0]:.1e}")
    model.eval()
    return sum(losses[-20:]) / len(losses[-20:])


def perplexity(model, tokens, window: int = EVAL_WINDOW, max_windows: Optional[int] = None,
               batch_size: int = 16) -> float:
    """exp(mean next-token loss) over non-overlapping ``window``-token windows of ``tokens``."""
    import torch

    n = len(tokens) // window
    if max_windows:
        n = min(n, max_windows)
    windows = tokens[: n * window].view(n, window)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, batch_size):
            batch = windows[i:i + batch_size]
            logits = model(input_ids=batch, use_cache=False).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
            total += float(loss)
            count += batch[:, 1:].numel()
    return math.exp(total / count)


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)


def build_model(name: str, out: Path) -> dict:
    """Train one tiny model, save it (bf16) with the tokenizer, and measure it reloaded."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = TRAIN_SPECS[name]
    tokenizer = load_tokenizer(out)
    raw, doc = _token_streams(tokenizer, (out / "corpus" / "train.txt").read_text(encoding="utf-8"))

    _seed_everything(spec.seed)
    config = model_config(name, tokenizer)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    bad = check_linear_in_features(model)
    assert not bad, f"{name}: input sizes not divisible by {LINEAR_IN_MULTIPLE}: {bad}"
    n_params = sum(p.numel() for p in model.parameters())

    t0 = time.perf_counter()
    final_loss = train_model(model, raw, doc, spec, desc=name)
    train_s = time.perf_counter() - t0

    model_dir = out / "tiny_models" / name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.generation_config.do_sample = False
    model.save_pretrained(str(model_dir), safe_serialization=True)
    add_legacy_config_keys(model_dir)
    save_tokenizer(tokenizer, model_dir)

    # Held-out perplexity of what was saved: bf16 weights, computed in float32.
    reloaded = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    reloaded.eval()
    held_raw, _ = _token_streams(tokenizer, (out / "corpus" / "heldout.txt").read_text(encoding="utf-8"))
    ppl = perplexity(reloaded, held_raw)

    info = {"name": name, "params": n_params, "train_tokens": spec.steps * spec.batch_size * spec.seq_len,
            "final_train_loss": round(final_loss, 4), "heldout_ppl": round(ppl, 3),
            "heldout_window": EVAL_WINDOW, "train_spec": asdict(spec)}
    (model_dir / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
    size_kb = sum(f.stat().st_size for f in model_dir.iterdir()) / 1024
    print(f"{name}: {n_params / 1e6:.2f} M params, trained {train_s:.1f} s, "
          f"final loss {final_loss:.3f}, held-out ppl {ppl:.2f}, {size_kb:.0f} KiB")
    return {**info, "train_seconds": round(train_s, 1), "size_kib": round(size_kb)}


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------

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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--only", choices=PARTS, default=None, help="build one part only")
    args = parser.parse_args(argv)
    reports = build(args.out, args.only)
    for r in reports:
        print(f"  {r['name']:>15}: {r['train_seconds']:6.1f} s  ppl {r['heldout_ppl']:7.3f}  {r['size_kib']} KiB")


if __name__ == "__main__":
    main()
