"""task=eagle3: EAGLE3 draft training, online or from dumped features (see optmodel/tasks/eagle3/run.py)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig

from optmodel.facts.errors import positive
from optmodel.speculative.serving import default_aux_layer_ids, deploy_problems as engine_problems
from optmodel.tasks.finetune.spec import training_stack_problems
from optmodel.tasks.spec import TaskConfig, TaskSpec
from optmodel.training.config import TrainingConfig

MEGATRON_PIPELINE_REFUSAL = (
    "parallel.pipeline: ModelOpt's Megatron EAGLE (0.46.1) collects the target's aux hidden states inside the last "
    "pipeline stage, which holds only its own layers. Fix: parallel.pipeline=1 (parallel.tensor shards the target).")


@dataclass
class AcceptanceConfig:
    """Acceptance length (AL) measurement: greedy, MT-Bench-style first turns."""

    prompts: Optional[str] = None  # jsonl of {"turns": [...]} / {"prompt": ...}; None: the bundled file
    num_prompts: int = 0  # first N prompts; 0: all
    max_new_tokens: int = 64
    draft_steps: int = 7


def eagle3_training() -> TrainingConfig:
    """The shared training config with eagle3's defaults, measured on the bundled target
    (benchmarks/eagle3.py, README): lr 2e-3 cosine to 1e-5 over 300 steps of 8 rows reach AL 3.71 in
    145 CPU s (the whole `optmodel task=eagle3` run). GPU recipes set Megatron-LM eagle3.sh's lr 5e-5 cosine to 1e-7 themselves. Rows are
    padded to task.seq_len (ModelOpt caches its train-time-test masks per length): no packing."""
    return TrainingConfig(max_steps=300, micro_batch_size=8, global_batch_size=8, lr=2e-3, min_lr_ratio=0.005,
                          lr_schedule="cosine", save_every=100, log_every=10, packing="pad")


# The options eagle3 had before it trained on the shared training config -> (their field now, how to convert)
RENAMED = {
    "lr": ("task.training.lr", ""),
    "max_steps": ("task.training.max_steps", ""),
    "lr_schedule": ("task.training.lr_schedule", ""),
    "warmup_steps": ("task.training.warmup_steps", ""),
    "batch_size": ("task.training.micro_batch_size", "and task.training.global_batch_size: rows per optimizer step"),
    "grad_accum": ("task.training.global_batch_size", "= micro_batch_size x grad_accum x data-parallel ranks"),
    "min_lr": ("task.training.min_lr_ratio", "the cosine floor as a share of task.training.lr: 1e-5 at lr 2e-3 is 0.005"),
    "save_steps": ("task.training.save_every", ""),
    "log_steps": ("task.training.log_every", ""),
    "resume": ("run.resume", "with run.output_dir=<the interrupted run dir>, as every training task"),
}


@dataclass
class Eagle3TaskConfig(TaskConfig):
    name: str = "eagle3"
    conversations: Optional[str] = None  # jsonl of {"messages": [...]} (or ShareGPT); None: the bundled set
    num_conversations: int = 0  # first N; 0: all
    seq_len: int = 128  # every row padded / cut to this many tokens
    offline_data: Optional[str] = None  # an eagle3_features dir: train from it, target not in memory
    draft_layers: int = 1
    aux_layer_ids: List[int] = field(default_factory=list)  # target layers whose output the draft fuses; empty: low, middle, high
    draft_vocab_size: Optional[int] = None  # None: the target's; smaller: d2t from token frequencies
    draft_intermediate_size: Optional[int] = None  # None: the target's MLP size
    ttt_steps: int = 3
    training: TrainingConfig = field(default_factory=eagle3_training)  # optimizer, steps, checkpoints: as finetune
    al_every: int = 100  # AL every N steps (online; 0: never); also before training and at the end
    acceptance: AcceptanceConfig = field(default_factory=AcceptanceConfig)
    export: bool = True  # <run dir>/draft: export_speculative_decoding
    deploy: str = "none"  # none | vllm | sglang | trtllm: the draft export in that engine's conventions (aux ids, names, rope)


def file_problems(field_name: str, path: Optional[str], keys: tuple, example: str) -> List[str]:
    """A local jsonl file whose first row has one of `keys`."""
    if path in (None, "", "bundled"):
        return []
    p = Path(path).expanduser()
    if not p.is_file():
        return [f"{field_name}: {p} does not exist. Fix: a local jsonl file, one {example} per line."]
    try:
        with open(p) as f:
            first = next((line for line in f if line.strip()), None)
        row = json.loads(first) if first else None
    except ValueError:
        row = None
    if not isinstance(row, dict) or not any(row.get(k) for k in keys):
        return [f"{field_name}: {p} has no {' / '.join(keys)} in its first row. Fix: one {example} per line."]
    return []


def aux_layer_problems(cfg: DictConfig) -> List[str]:
    model = cfg.model
    return [f"task.aux_layer_ids: layer {i} is outside the target's layers 0..{model.num_layers - 1} "
            f"(model {model.name}). Fix: ids in that range, or [] for ModelOpt's default."
            for i in cfg.task.aux_layer_ids if not 0 <= i < model.num_layers]


def deploy_problems(cfg: DictConfig) -> List[str]:
    """task.deploy against the aux layers the draft will train on (the serving engine's capture rule)."""
    dumped = Path(cfg.task.offline_data or "").expanduser() / "features.json"
    if cfg.task.offline_data and dumped.is_file():  # offline: the layers the features hold
        ids = json.loads(dumped.read_text()).get("aux_layer_ids") or []
    else:
        ids = sorted(cfg.task.aux_layer_ids) or default_aux_layer_ids(cfg.model.num_layers)
    return engine_problems(cfg.task.deploy, ids, cfg.model.num_layers)


def draft_problems(cfg: DictConfig) -> List[str]:
    task, model = cfg.task, cfg.model
    found = aux_layer_problems(cfg)
    found += deploy_problems(cfg) if not found else []
    if task.draft_vocab_size is not None and not 0 < task.draft_vocab_size <= model.vocab_size:
        found.append(f"task.draft_vocab_size: {task.draft_vocab_size} must be in 1..{model.vocab_size} (the target's "
                     f"vocabulary). Fix: e.g. task.draft_vocab_size={min(32000, model.vocab_size)} or null.")
    found += positive("task.ttt_steps", task.ttt_steps) + positive("task.draft_layers", task.draft_layers)
    return found


def features_problems(cfg: DictConfig, field_name: str = "task.offline_data") -> List[str]:
    path = Path(cfg.task.offline_data).expanduser()
    manifest = path / "features.json"
    if not manifest.is_file():
        return [f"{field_name}: {path} holds no features.json. Fix: the output dir of a task=eagle3_features run."]
    meta = json.loads(manifest.read_text())
    found = []
    if not meta.get("complete"):
        found.append(f"{field_name}: the features dump in {path} did not finish. Fix: rerun task=eagle3_features "
                     f"with task.output_dir={path} (it resumes).")
    for key, mine in (("hidden_size", cfg.model.hidden_size), ("num_layers", cfg.model.num_layers)):
        if meta.get(key) != mine:
            found.append(f"{field_name}: features of a target with {key} {meta.get(key)}, model {cfg.model.name} has "
                         f"{mine}. Fix: model= the target the features were dumped from.")
    if cfg.task.aux_layer_ids and sorted(cfg.task.aux_layer_ids) != meta.get("aux_layer_ids"):
        found.append(f"task.aux_layer_ids: {list(cfg.task.aux_layer_ids)} differ from the dumped layers "
                     f"{meta.get('aux_layer_ids')}. Fix: task.aux_layer_ids=[] (use the dump's).")
    if not os.path.isdir(str(meta.get("target", ""))):
        found.append(f"{field_name}: the features' target {meta.get('target')} is not a local checkpoint dir "
                     f"(offline training reads its embeddings and LM head). Fix: dump from a local checkpoint.")
    return found


def megatron_problems(cfg: DictConfig) -> List[str]:
    """What backend=megatron's EAGLE3 (optmodel.speculative.megatron_eagle) cannot do."""
    if cfg.backend.name != "megatron" or cfg.parallel.pipeline <= 1 or cfg.task.name == "eagle3_features":
        return []
    return [MEGATRON_PIPELINE_REFUSAL]


def draft_training_problems(cfg: DictConfig) -> List[str]:
    """task.training as finetune checks it, and what a draft's training does not read."""
    t = cfg.task.training
    found = training_stack_problems(cfg)
    if t.eval_every or t.eval_max_sequences:
        found.append("task.training.eval_every: eagle3 has no held-out loss; it measures acceptance length. "
                     "Fix: task.training.eval_every=0 task.training.eval_max_sequences=0, and task.al_every=<N>.")
    if t.packing != "pad":
        found.append(f"task.training.packing: eagle3 rows are one conversation each, padded to task.seq_len "
                     f"(got {t.packing!r}). Fix: task.training.packing=pad.")
    if t.max_train_sequences:
        found.append("task.training.max_train_sequences: eagle3 counts conversations. "
                     "Fix: task.num_conversations=<N> and task.training.max_train_sequences=0.")
    return found


def acceptance_problems(acc: DictConfig, prefix: str) -> List[str]:
    return (file_problems(f"{prefix}.prompts", acc.prompts, ("turns", "prompt", "messages"), '{"turns": ["..."]}')
            + positive(f"{prefix}.max_new_tokens", acc.max_new_tokens) + positive(f"{prefix}.draft_steps", acc.draft_steps))


def problems(cfg: DictConfig) -> List[str]:
    task = cfg.task
    found = megatron_problems(cfg) + draft_problems(cfg)
    if task.offline_data:
        found += features_problems(cfg)
    else:
        found += file_problems("task.conversations", task.conversations, ("messages", "conversations"),
                               '{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}')
    found += positive("task.seq_len", task.seq_len, minimum=8) + draft_training_problems(cfg)
    if task.al_every < 0:
        found.append(f"task.al_every: must be >= 0 (0: no AL checks), got {task.al_every}.")
    return found + acceptance_problems(task.acceptance, "task.acceptance")


SPEC = TaskSpec(name="eagle3", schema=Eagle3TaskConfig, problems=problems,
                backends=("hf", "megatron"), resumable=True, renamed=RENAMED,
                sweep_axes=("draft_layers", "ttt_steps", "draft_vocab_size", "train_steps"))
