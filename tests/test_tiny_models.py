"""The bundled corpus, tokenizer and tiny checkpoints (built by ``python -m optmodel.tinybuild``).

Loads the real checkpoints with transformers' Auto classes; nothing is mocked. ~10 s.
"""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from optmodel.tinybuild.constants import DEFAULT_OUT, LINEAR_IN_MULTIPLE, MODEL_NAMES, VOCAB_SIZE  # noqa: E402

ASSETS = DEFAULT_OUT
CORPUS = ASSETS / "corpus"
EVAL_WINDOW = 256
EVAL_WINDOWS = 16
MAX_PPL = 30.0


@pytest.fixture(scope="module")
def heldout_text() -> str:
    return (CORPUS / "heldout.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def loaded(heldout_text):
    """name -> (model in float32, tokenizer, held-out perplexity on the first 16 windows)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    out = {}
    for name in MODEL_NAMES:
        path = ASSETS / "tiny_models" / name
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        ids = tokenizer(heldout_text, add_special_tokens=False)["input_ids"]
        n = min(EVAL_WINDOWS, len(ids) // EVAL_WINDOW)
        windows = torch.tensor(ids[: n * EVAL_WINDOW]).view(n, EVAL_WINDOW)
        with torch.no_grad():
            logits = model(input_ids=windows, use_cache=False).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
        out[name] = (model, tokenizer, math.exp(loss.item()))
    return out


def test_corpus_files():
    train, heldout = CORPUS / "train.txt", CORPUS / "heldout.txt"
    assert train.is_file() and heldout.is_file()
    train_text, heldout_text = train.read_text(encoding="utf-8"), heldout.read_text(encoding="utf-8")
    assert train_text != heldout_text
    assert 400_000 <= len(train_text.encode()) <= 600_000
    assert 40_000 <= len(heldout_text.encode()) <= 60_000
    assert "\n\n" in train_text and "\n\n" in heldout_text
    # Different seeds: held-out paragraphs are mostly new, not copies of training ones.
    train_paragraphs = set(train_text.split("\n\n"))
    held_paragraphs = heldout_text.split("\n\n")
    assert sum(p in train_paragraphs for p in held_paragraphs) < 0.2 * len(held_paragraphs)


def test_tokenizer_dir():
    from transformers import AutoTokenizer

    tok_dir = ASSETS / "tokenizer"
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    assert len(tokenizer) == VOCAB_SIZE
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>")
    text = "Seven plus five is twelve."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is two plus two?"},
         {"role": "assistant", "content": "Two plus two is four."}], tokenize=False)
    assert chat == ("<|bos|><|user|>\nWhat is two plus two?<|eos|>\n"
                    "<|assistant|>\nTwo plus two is four.<|eos|>\n")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_checkpoint_files(name):
    from safetensors import safe_open

    path = ASSETS / "tiny_models" / name
    for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json"):
        assert (path / f).is_file(), f
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["dtype"] == cfg["torch_dtype"] == "bfloat16"
    assert cfg["vocab_size"] == VOCAB_SIZE
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    assert (path / "model.safetensors").stat().st_size < 6 * 2**20


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_heldout_perplexity(loaded, name):
    _, _, ppl = loaded[name]
    assert ppl < MAX_PPL, f"{name}: held-out perplexity {ppl:.2f}"
    assert ppl < VOCAB_SIZE / 30


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_linear_in_features(loaded, name):
    model, _, _ = loaded[name]
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert linears
    bad = [(n, m.in_features) for n, m in linears if m.in_features % LINEAR_IN_MULTIPLE]
    assert not bad, bad
    # Fused MoE experts ([experts, out, in]) are split into Linears by ModelOpt.
    bad3d = [(n, tuple(p.shape)) for n, p in model.named_parameters()
             if p.dim() == 3 and p.shape[-1] % LINEAR_IN_MULTIPLE]
    assert not bad3d, bad3d


def test_architectures(loaded):
    cfgs = {name: loaded[name][0].config for name in MODEL_NAMES}
    assert cfgs["tiny_qwen3"].model_type == "qwen3" and not cfgs["tiny_qwen3"].tie_word_embeddings
    assert cfgs["tiny_llama"].model_type == "llama" and cfgs["tiny_llama"].tie_word_embeddings
    assert cfgs["tiny_llama"].rope_parameters["rope_type"] == "llama3"
    assert cfgs["tiny_qwen3_moe"].model_type == "qwen3_moe" and cfgs["tiny_qwen3_moe"].num_experts == 8
    ds = cfgs["tiny_deepseek"]
    assert ds.model_type == "deepseek_v3"
    assert (ds.q_lora_rank, ds.kv_lora_rank, ds.n_routed_experts, ds.first_k_dense_replace) == (128, 128, 8, 1)


def test_generate(loaded):
    model, tokenizer, _ = loaded["tiny_qwen3"]
    ids = tokenizer("Seven plus five is", return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
