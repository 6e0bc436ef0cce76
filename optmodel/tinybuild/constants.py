"""Sizes, seeds and special tokens shared by the corpus, tokenizer and model builders."""

from __future__ import annotations

from pathlib import Path

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

MODEL_NAMES = ("tiny_qwen3", "tiny_llama", "tiny_qwen3_moe", "tiny_deepseek", "tiny_llama4", "tiny_gpt_oss",
               "tiny_qwen3_teacher")
PARTS = ("corpus", "tokenizer", *MODEL_NAMES)
LINEAR_IN_MULTIPLE = 128
EVAL_WINDOW = 256
NUM_THREADS = 2


