"""Dataclass schemas behind every config group.

Registered in Hydra's ConfigStore so that a YAML file with a misspelt field fails at
composition with the field's full path. Imports nothing heavy: `--cfg job` and config
tests must not pay for torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING



@dataclass
class MoEConfig:
    num_experts: int = MISSING
    top_k: int = MISSING
    ffn_hidden_size: int = MISSING  # per routed expert
    shared_expert_ffn_hidden_size: int = 0  # 0: no shared expert
    first_k_dense_layers: int = 0  # leading dense layers (DeepSeek-V3 / Kimi-K2)
    layer_freq: int = 1  # MoE on every N-th layer, dense between (Llama-4 Maverick: 2)
    router_score_function: str = "softmax"  # softmax | sigmoid
    router_topk_scaling: float = 1.0
    router_norm_topk_prob: bool = False
    router_expert_bias: bool = False  # aux-loss-free load balancing bias
    router_bias_update_rate: float = 0.0
    router_pre_softmax: bool = False
    router_num_groups: int = 1  # device-limited routing groups (DeepSeek-V3: 8)
    router_group_topk: int = 1
    router_dtype: Optional[str] = None  # e.g. fp32 for Qwen3-MoE
    aux_loss_coeff: float = 0.0


@dataclass
class MLAConfig:
    q_lora_rank: Optional[int] = None  # None: no query compression (DeepSeek-V2-Lite)
    kv_lora_rank: int = MISSING
    qk_head_dim: int = MISSING  # the non-rotary part of each query/key head
    qk_pos_emb_head_dim: int = MISSING  # the rotary part
    v_head_dim: int = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    family: str = MISSING  # llama | qwen2 | qwen3 | qwen3_moe | llama4 | deepseek_v3 | deepseek_v2 | gpt_oss
    checkpoint: Optional[str] = None  # local Hugging Face checkpoint directory
    tiny: bool = False  # built into the package (optmodel/assets/tiny_models/<name>)
    trust_remote_code: bool = False  # only models whose config opts in (e.g. Kimi-K2)
    num_layers: int = MISSING  # decoder layers
    hidden_size: int = MISSING  # model width
    ffn_hidden_size: int = MISSING  # dense MLP size
    num_attention_heads: int = MISSING  # query heads
    num_query_groups: Optional[int] = None  # None for MLA models
    kv_channels: int = MISSING  # head dim
    qk_layernorm: bool = False  # RMS norm on each query / key head (Qwen3)
    qk_l2_norm: bool = False  # L2 norm on queries / keys (Llama-4)
    qkv_bias: bool = False  # biases on the q / k / v projections (Qwen2)
    tied_embeddings: bool = False  # the output layer shares the embedding's weight
    vocab_size: int = MISSING  # tokenizer vocabulary (config.json vocab_size)
    padded_vocab_size: Optional[int] = None  # embedding rows when larger than the tokenizer
    max_position_embeddings: int = MISSING  # longest sequence the model is trained for
    rope_theta: float = 10000.0  # rotary base
    rope_scaling: Optional[Dict[str, Any]] = None  # config.json's rope_scaling (llama3, yarn), as given
    nope_layer_interval: Optional[int] = None  # Llama-4: every 4th layer without rope
    sliding_window: Optional[int] = None  # attention window of the sliding layers (gpt-oss)
    norm_eps: float = 1e-6  # RMS norm epsilon
    dtype: str = "bfloat16"  # dtype of the released weights
    moe: Optional[MoEConfig] = None
    mla: Optional[MLAConfig] = None


@dataclass
class ParallelConfig:
    name: str = MISSING
    tensor: int = 1  # TP: tensor-parallel size (backend=megatron)
    pipeline: int = 1  # PP: pipeline stages
    expert: int = 1  # EP: expert-parallel size (MoE models)
    expert_tensor: Optional[int] = None  # None: same as tensor
    context: int = 1  # CP: context-parallel size (needs Transformer-Engine)
    data: Optional[int] = None  # None: whatever the world size leaves
    sequence_parallel: bool = False  # megatron sequence parallelism with TP (needs Transformer-Engine)
    pipeline_first_stage_layers: Optional[int] = None  # uneven split: first stage
    pipeline_last_stage_layers: Optional[int] = None  # uneven split: last stage


@dataclass
class BackendConfig:
    name: str = "hf"
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # compute dtype: auto | float32 | bfloat16 | float16 (auto: optmodel/facts/dtype.py)
    attn_implementation: str = "auto"  # auto | sdpa | eager | ... (backend=hf; auto: sdpa, eager for gpt-oss's sinks)
    # backend=megatron only:
    token_dispatcher: str = "allgather"  # MoE token dispatcher: allgather (gloo and NCCL) | alltoall (NCCL)
    cpu_init: bool = False  # build and keep weights in host memory (convert / export of stages larger than a GPU)


@dataclass
class DataConfig:
    name: str = MISSING
    source: str = "bundled"  # bundled | text | jsonl | hf
    calib_path: Optional[str] = None  # .txt, or .jsonl rows with "text" or chat "messages"
    eval_path: Optional[str] = None  # held-out text for perplexity, as calib_path
    dataset: Optional[str] = None  # source=hf: a dataset name (local cache) or a local dataset dir
    dataset_config: Optional[str] = None  # source=hf: the dataset's config name
    calib_split: str = "train"  # source=hf: split the calibration (or training) rows come from
    eval_split: str = "validation"  # source=hf: held-out split
    text_field: str = "text"  # source=hf: the column holding text (rows with "messages" also work)
    packing: str = "pack"  # pack | sort | pad: how calibration rows become batches (see data/text.py)
    num_samples: int = 32  # calibration sequences
    seq_len: int = 256  # tokens per sequence (calibration, training, perplexity windows)
    batch_size: int = 8  # sequences per forward
    eval_max_sequences: int = 64  # held-out sequences for perplexity; 0 = all


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "optmodel"  # wandb project
    entity: Optional[str] = None  # wandb entity (team); None: the account's default
    mode: str = "offline"  # online | offline | disabled
    group: Optional[str] = None  # wandb run group
    tags: List[str] = field(default_factory=list)  # wandb run tags


@dataclass
class RunConfig:
    seed: int = 1234  # the run's random seed
    output_dir: Optional[str] = None  # None: Hydra's run dir
    world_size: Optional[int] = None  # None: from the launch environment (WORLD_SIZE)
    load: Optional[str] = None  # an earlier run dir whose model (and quantization state) this run starts from
    dry_run: bool = False  # validate and print the plan (ranks, layers, memory per GPU); load nothing
    resume: bool = False  # continue an unfinished run in run.output_dir (training: from its last complete checkpoint)


@dataclass
class OptmodelConfig:
    model: ModelConfig = MISSING
    parallel: ParallelConfig = MISSING
    task: Any = MISSING  # one of the TaskConfig subclasses, picked by the task group
    backend: BackendConfig = MISSING
    data: DataConfig = MISSING
    logger: LoggerConfig = MISSING
    run: RunConfig = field(default_factory=RunConfig)
    experiment: Optional[Any] = None


def register_schemas(specs: Mapping[str, Any]) -> None:
    """The run config's schema and each task's own (specs: every task's spec by name, the registry's)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("optmodel.or"):  # ${optmodel.or:${run.output_dir},<default dir>}
        OmegaConf.register_new_resolver("optmodel.or", lambda value, default: default if value is None else value)
    cs = ConfigStore.instance()
    cs.store(name="optmodel_schema", node=OptmodelConfig)
    for task_name, spec in specs.items():  # each task's own schema (optmodel/tasks/<name>/spec.py)
        cs.store(group="schema/task", name=task_name, node=spec.schema)
