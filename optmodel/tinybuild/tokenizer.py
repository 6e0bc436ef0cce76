"""The byte-level BPE tokenizer trained on the corpus."""

from __future__ import annotations

import json
from pathlib import Path

from optmodel.tinybuild.constants import BOS, CHAT_TEMPLATE, EOS, PAD, SPECIAL_TOKENS, UNK, VOCAB_SIZE


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


