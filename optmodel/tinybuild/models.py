"""The tiny models: transformers configs, the training loop, save and held-out measurement."""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

from optmodel.tinybuild.configs import ATTN_IMPLEMENTATION, model_config
from optmodel.tinybuild.constants import DEFAULT_OUT, EVAL_WINDOW, LINEAR_IN_MULTIPLE, NUM_THREADS
from optmodel.tinybuild.corpus import generate_corpus
from optmodel.tinybuild.tokenizer import load_tokenizer, save_tokenizer


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
    packed_frac: float = 0.0  # rows as optmodel's data packing gives them: paragraph<|eos|>paragraph<|eos|>...
    seed: int = 0
    # > 0: train on this many bytes of fresh grammar text (seeded by ``seed``, never written
    # out) instead of train.txt, so the model learns the distribution, not the file
    fresh_text_bytes: int = 0
    threads: int = NUM_THREADS  # torch threads: results are bit-for-bit only at the same count


# Step counts measured to keep each model's training near 80 s on a 2-core CPU
# (s/step: qwen3 ~0.21, llama ~0.19, qwen3_moe ~0.24, deepseek ~0.35).
TRAIN_SPECS: Dict[str, TrainSpec] = {
    "tiny_qwen3": TrainSpec(steps=350, seed=1),
    "tiny_llama": TrainSpec(steps=400, seed=2),
    "tiny_qwen3_moe": TrainSpec(steps=300, seed=3),
    "tiny_deepseek": TrainSpec(steps=200, seed=4),
    # Shorter rows and batches (a quarter of the tokens per step of the others); timed only on a
    # shared machine at load ~10: 1992 s / 2354 s, when the others ran 20-40x slower than idle.
    "tiny_llama4": TrainSpec(steps=100, batch_size=8, seq_len=128, seed=5),
    "tiny_gpt_oss": TrainSpec(steps=100, batch_size=8, seq_len=128, seed=6),
    # The teacher of the bundled distillation pair: trained on grammar text the student's
    # fine-tuning (train.txt) never sees; its 4-layer pruned student starts well above it.
    # Its rows are mostly in the packed form optmodel trains and measures on (data=bundled).
    # 800 steps (768 s at one thread, the other core mostly busy): at 320 it ended only 0.02 perplexity below
    # what fine-tuning its pruned student reached, and 100 fine-tuning steps went past it.
    "tiny_qwen3_teacher": TrainSpec(steps=800, seed=7, fresh_text_bytes=10_000_000, threads=1, packed_frac=0.75),
}
FRESH_TEXT_SEED = 31_000  # + spec.seed: apart from TRAIN_SEED and HELDOUT_SEED
FIRST_LOSSES = 4  # losses of the first steps recorded in train_info.json: the build's fingerprint


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
    """(raw, document, packed) streams as int64 tensors: raw is the text as-is; document is
    ``<|bos|> paragraph <|eos|>`` per paragraph (so the models also know bos/eos); packed is
    ``paragraph <|eos|>`` per paragraph, as optmodel.data.text.pack joins records."""
    import torch

    paragraphs = text.strip("\n").split("\n\n")
    ids = tokenizer(paragraphs, add_special_tokens=False)["input_ids"]
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    raw: List[int] = []
    doc: List[int] = []
    packed: List[int] = []
    for p in ids:
        raw += p + sep
        doc += [tokenizer.bos_token_id] + p + [tokenizer.eos_token_id]
        packed += p + [tokenizer.eos_token_id]
    return tuple(torch.tensor(s, dtype=torch.long) for s in (raw, doc, packed))


def _batches(streams, spec: TrainSpec):
    """Yield ``spec.steps`` batches of random windows, drawn from a seeded generator."""
    import torch

    raw, doc, packed = streams
    g = torch.Generator().manual_seed(spec.seed)
    L = spec.seq_len
    n_doc = round(spec.batch_size * spec.doc_format_frac)
    n_packed = round(spec.batch_size * spec.packed_frac)
    for _ in range(spec.steps):
        rows = []
        for i in range(spec.batch_size):
            src = doc if i < n_doc else packed if i < n_doc + n_packed else raw
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


def train_model(model, streams, spec: TrainSpec, desc: str = "train", stop_after: Optional[int] = None) -> List[float]:
    """Causal-LM training in float32; returns every step's loss. ``stop_after``: only the first
    steps of the same run (schedule and batches as for all ``spec.steps``)."""
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
    bar = tqdm(_batches(streams, spec), total=stop_after or spec.steps, desc=desc, unit="step")
    for batch in itertools.islice(bar, stop_after):
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
    return losses


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


def training_text(spec: TrainSpec, out: Path) -> str:
    """train.txt, or ``spec.fresh_text_bytes`` of grammar text from ``spec.seed``."""
    if spec.fresh_text_bytes:
        return generate_corpus(FRESH_TEXT_SEED + spec.seed, spec.fresh_text_bytes)
    return (out / "corpus" / "train.txt").read_text(encoding="utf-8")


def _seed_everything(seed: int, threads: int = NUM_THREADS) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def initial_model(name: str, tokenizer):
    """The untrained float32 model, seeded as the build seeds it (threads set too)."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = TRAIN_SPECS[name]
    _seed_everything(spec.seed, spec.threads)
    return AutoModelForCausalLM.from_config(model_config(name, tokenizer), dtype=torch.float32,
                                            attn_implementation=ATTN_IMPLEMENTATION.get(name, "sdpa"))


def first_losses(name: str, out: Path = DEFAULT_OUT, steps: int = FIRST_LOSSES) -> List[float]:
    """The losses of the build's first ``steps`` steps, replayed: equal to train_info.json's
    ``first_losses`` when the builder (config, seed, data, schedule) is the one that made it."""
    spec = TRAIN_SPECS[name]
    tokenizer = load_tokenizer(out)
    streams = _token_streams(tokenizer, training_text(spec, out))
    return train_model(initial_model(name, tokenizer), streams, spec, desc=f"{name} replay", stop_after=steps)


def build_model(name: str, out: Path) -> dict:
    """Train one tiny model, save it (bf16) with the tokenizer, and measure it reloaded."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = TRAIN_SPECS[name]
    tokenizer = load_tokenizer(out)
    streams = _token_streams(tokenizer, training_text(spec, out))

    model = initial_model(name, tokenizer)
    attn = ATTN_IMPLEMENTATION.get(name, "sdpa")
    bad = check_linear_in_features(model)
    assert not bad, f"{name}: input sizes not divisible by {LINEAR_IN_MULTIPLE}: {bad}"
    n_params = sum(p.numel() for p in model.parameters())

    t0 = time.perf_counter()
    losses = train_model(model, streams, spec, desc=name)
    final_loss = sum(losses[-20:]) / len(losses[-20:])
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
    reloaded = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation=attn)
    reloaded.eval()
    held_raw, _, held_packed = _token_streams(tokenizer, (out / "corpus" / "heldout.txt").read_text(encoding="utf-8"))
    ppl = perplexity(reloaded, held_raw)

    info = {"name": name, "params": n_params, "train_tokens": spec.steps * spec.batch_size * spec.seq_len,
            "final_train_loss": round(final_loss, 4), "heldout_ppl": round(ppl, 3),
            "heldout_window": EVAL_WINDOW, "train_spec": asdict(spec)}
    if spec.packed_frac:  # held out as optmodel packs it (trained mostly on that form)
        info["heldout_ppl_packed"] = round(perplexity(reloaded, held_packed), 3)
    if spec.fresh_text_bytes:
        info["first_losses"] = [round(x, 4) for x in losses[:FIRST_LOSSES]]
    (model_dir / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
    size_kb = sum(f.stat().st_size for f in model_dir.iterdir()) / 1024
    print(f"{name}: {n_params / 1e6:.2f} M params, trained {train_s:.1f} s, "
          f"final loss {final_loss:.3f}, held-out ppl {ppl:.2f}, {size_kb:.0f} KiB")
    return {**info, "train_seconds": round(train_s, 1), "size_kib": round(size_kb)}


