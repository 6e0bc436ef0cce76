"""task=eagle3: EAGLE3 draft training, online or from dumped features (see optmodel/tasks/eagle3/run.py)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig

from optmodel.facts.dtype import MEGATRON_CPU_DTYPE_REFUSAL, compute_dtype, expected_device
from optmodel.facts.errors import positive
from optmodel.speculative.serving import default_aux_layer_ids, deploy_problems as engine_problems
from optmodel.tasks.spec import TaskConfig, TaskSpec
from optmodel.training.config import LR_SCHEDULES

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
    # lr / steps / schedule measured on the bundled target (benchmarks/eagle3.py, README): AL 3.75 after
    # 300 steps in ~140 CPU s; GPU recipes set Megatron-LM eagle3.sh's lr 5e-5 cosine to 1e-7 themselves
    lr: float = 2e-3
    lr_schedule: str = "cosine"  # cosine (to min_lr) | linear | constant, each after warmup_steps
    min_lr: float = 1e-5  # cosine floor
    warmup_steps: int = 0
    max_steps: int = 300
    batch_size: int = 8
    grad_accum: int = 1
    save_steps: int = 100  # Trainer checkpoints under <run dir>/checkpoints
    log_steps: int = 10
    resume: bool = True  # continue from the newest checkpoint in <run dir>/checkpoints
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


def megatron_problems(cfg: DictConfig, trains: bool = True) -> List[str]:
    """What backend=megatron's EAGLE3 (optmodel.speculative.megatron_eagle) cannot do."""
    if cfg.backend.name != "megatron":
        return []

    found = [MEGATRON_PIPELINE_REFUSAL] if cfg.parallel.pipeline > 1 and cfg.task.name != "eagle3_features" else []
    if trains:
        if expected_device(cfg.backend) == "cpu" and compute_dtype(cfg.backend, cfg.model, "cpu") != "float32":
            found.append(MEGATRON_CPU_DTYPE_REFUSAL)
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
    found += positive("task.seq_len", task.seq_len, minimum=8) + positive("task.max_steps", task.max_steps)
    found += positive("task.batch_size", task.batch_size) + positive("task.grad_accum", task.grad_accum)
    found += positive("task.save_steps", task.save_steps) + positive("task.log_steps", task.log_steps)
    if task.lr_schedule not in LR_SCHEDULES:
        found.append(f"task.lr_schedule: unknown value {task.lr_schedule!r}. Valid: {', '.join(LR_SCHEDULES)}.")
    if task.al_every < 0:
        found.append(f"task.al_every: must be >= 0 (0: no AL checks), got {task.al_every}.")
    return found + acceptance_problems(task.acceptance, "task.acceptance")


SPEC = TaskSpec(name="eagle3", schema=Eagle3TaskConfig, problems=problems,
                backends=("hf", "megatron"), resumable=True,
                sweep_axes=("draft_layers", "ttt_steps", "draft_vocab_size", "train_steps"))
