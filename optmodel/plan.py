"""`run.dry_run=true`: the plan of a run, computed from the config alone.

Ranks and their parallel groups, the decoder layers on each pipeline stage, experts per
rank, and parameter / optimizer bytes per GPU for the chosen dtype, counted the way
megatron-core shards the model (TP splits attention and dense MLPs, EP splits routed
experts, ETP splits each expert, PP splits layers; norms, MLA down-projections and
routers are replicated). No weights are read and nothing heavy is imported, so a user
learns on a laptop whether a 128-GPU layout fits before queueing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import DictConfig

from optmodel.checked import config_problems
from optmodel.config.validate import machine_problems
from optmodel.facts.checkpoint import checkpoint_problems
from optmodel.facts.dtype import compute_dtype
from optmodel.facts.errors import ConfigError
from optmodel.facts.layout import expert_tensor_size, launched_world_size, pipeline_stage_layers, required_world_size

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Adam in mixed precision: fp32 master weights + first and second moments (megatron's
# non-distributed optimizer; the distributed optimizer divides this by DP).
OPTIMIZER_BYTES_PER_PARAM = 12


@dataclass
class StagePlan:
    stage: int
    layers: List[int]  # global 0-based decoder layer indices
    dense_layers: int
    moe_layers: int
    params_per_gpu: int  # the largest rank of this stage (they are equal within a stage)


@dataclass
class Plan:
    model: str
    parallel: str
    world_size: int
    tensor: int
    pipeline: int
    expert: int
    expert_tensor: int
    context: int
    data: int
    expert_data: int
    dtype: str
    stages: List[StagePlan] = field(default_factory=list)
    experts_per_rank: Optional[int] = None
    total_params: int = 0

    @property
    def max_params_per_gpu(self) -> int:
        return max(s.params_per_gpu for s in self.stages)

    @property
    def param_bytes_per_gpu(self) -> int:
        return self.max_params_per_gpu * DTYPE_BYTES[self.dtype]

    @property
    def optimizer_bytes_per_gpu(self) -> int:
        return self.max_params_per_gpu * OPTIMIZER_BYTES_PER_PARAM

    def as_dict(self) -> Dict:
        return {
            "world_size": self.world_size,
            "layout": {"TP": self.tensor, "PP": self.pipeline, "EP": self.expert, "ETP": self.expert_tensor,
                       "CP": self.context, "DP": self.data, "expert_DP": self.expert_data},
            "layers_per_stage": [len(s.layers) for s in self.stages],
            "experts_per_rank": self.experts_per_rank,
            "params_per_gpu": [s.params_per_gpu for s in self.stages],
            "total_params": self.total_params,
            "param_bytes_per_gpu": self.param_bytes_per_gpu,
            "optimizer_bytes_per_gpu": self.optimizer_bytes_per_gpu,
        }


def _attention_params(m: DictConfig, tp: int) -> int:
    h = m.hidden_size
    if m.mla is not None:
        a = m.mla
        heads = m.num_attention_heads
        q_head = a.qk_head_dim + a.qk_pos_emb_head_dim
        if a.q_lora_rank:
            q = h * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * heads * q_head // tp
        else:
            q = h * heads * q_head // tp
        kv = h * (a.kv_lora_rank + a.qk_pos_emb_head_dim) + a.kv_lora_rank
        kv += a.kv_lora_rank * heads * (a.qk_head_dim + a.v_head_dim) // tp
        return q + kv + heads * a.v_head_dim * h // tp
    qkv_out = (m.num_attention_heads + 2 * m.num_query_groups) * m.kv_channels
    params = h * qkv_out // tp + m.num_attention_heads * m.kv_channels * h // tp
    if m.qkv_bias:
        params += qkv_out // tp
    if m.qk_layernorm:
        params += 2 * m.kv_channels
    if m.family == "gpt_oss":  # output-projection bias (replicated) and one attention sink per head
        params += h + m.num_attention_heads // tp
    return params


def layer_params(m: DictConfig, moe_layer: bool, tp: int, ep: int, etp: int) -> int:
    """Parameters of one decoder layer on one rank."""
    h = m.hidden_size
    params = 2 * h + _attention_params(m, tp)  # input and pre-MLP RMSNorms
    if not moe_layer:
        return params + 3 * h * m.ffn_hidden_size // tp  # SwiGLU: gate, up, down
    moe = m.moe
    params += h * moe.num_experts  # router (replicated)
    params += (moe.num_experts // ep) * 3 * h * moe.ffn_hidden_size // etp
    if m.family == "gpt_oss":  # router bias; expert fc1 bias (split like fc1) and fc2 bias (whole)
        params += moe.num_experts + (moe.num_experts // ep) * (2 * moe.ffn_hidden_size // etp + h)
    if moe.shared_expert_ffn_hidden_size:
        params += 3 * h * moe.shared_expert_ffn_hidden_size // tp
    return params


def moe_layers(m: DictConfig) -> List[bool]:
    moe = m.moe
    if moe is None:
        return [False] * m.num_layers
    # Hugging Face's rule (optmodel.facts.hf_config): Maverick's MoE layers are 1, 3, 5, ...
    return [i >= moe.first_k_dense_layers and (i + 1) % moe.layer_freq == 0 for i in range(m.num_layers)]


def make_plan(cfg: DictConfig, world_size: Optional[int] = None) -> Plan:
    m, par = cfg.model, cfg.parallel
    world = world_size or required_world_size(par)
    tp, pp, cp, ep = par.tensor, par.pipeline, par.context, par.expert
    etp = expert_tensor_size(par)
    vocab = m.padded_vocab_size or m.vocab_size
    is_moe = moe_layers(m)
    plan = Plan(
        model=m.name, parallel=par.name, world_size=world, tensor=tp, pipeline=pp, expert=ep,
        expert_tensor=etp, context=cp, data=world // (tp * pp * cp), expert_data=world // (etp * ep * pp),
        dtype=compute_dtype(cfg.backend, cfg.model, "cuda"), experts_per_rank=(m.moe.num_experts // ep) if m.moe is not None else None,
    )
    first = 0
    for stage, count in enumerate(pipeline_stage_layers(m.num_layers, par)):
        layers = list(range(first, first + count))
        first += count
        params = sum(layer_params(m, is_moe[i], tp, ep, etp) for i in layers)
        if stage == 0:
            params += vocab * m.hidden_size // tp  # word embeddings
        if stage == pp - 1:
            params += m.hidden_size  # final norm
            if not m.tied_embeddings or pp > 1:  # a tied head is a copy on the last stage
                params += vocab * m.hidden_size // tp
        n_moe = sum(is_moe[i] for i in layers)
        plan.stages.append(StagePlan(stage, layers, count - n_moe, n_moe, params))
    plan.total_params = (
        sum(layer_params(m, is_moe[i], 1, 1, 1) for i in range(m.num_layers))
        + vocab * m.hidden_size * (1 if m.tied_embeddings else 2) + m.hidden_size
    )
    return plan


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _ranges(layers: List[int]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


def format_plan(plan: Plan, gpu_bytes: Optional[int] = None) -> str:
    lines = [
        f"optmodel dry run: {plan.model} on parallel={plan.parallel} ({plan.dtype})",
        f"  ranks       {plan.world_size} = TP {plan.tensor} x PP {plan.pipeline} x CP {plan.context} x DP {plan.data}"
        f" (experts: ETP {plan.expert_tensor} x EP {plan.expert} x PP {plan.pipeline} x expert-DP {plan.expert_data})",
        f"  parameters  {plan.total_params:,} in total",
    ]
    if plan.experts_per_rank is not None:
        lines.append(f"  experts     {plan.experts_per_rank} per rank (EP {plan.expert})")
    for s in plan.stages:
        kinds = ", ".join(k for k in (f"{s.dense_layers} dense" if s.dense_layers else "",
                                      f"{s.moe_layers} MoE" if s.moe_layers else "") if k)
        lines.append(
            f"  stage {s.stage:<3}   layers {_ranges(s.layers):<7} ({len(s.layers)}: {kinds}) "
            f"{s.params_per_gpu:,} params/GPU = {_gib(s.params_per_gpu * DTYPE_BYTES[plan.dtype])}"
        )
    lines.append(f"  per GPU     parameters {_gib(plan.param_bytes_per_gpu)} ({plan.dtype}), "
                 f"Adam optimizer state {_gib(plan.optimizer_bytes_per_gpu)} (fp32 master + 2 moments)")
    if gpu_bytes:
        fits = plan.param_bytes_per_gpu < gpu_bytes
        lines.append(f"  this GPU    {_gib(gpu_bytes)}: parameters {'fit' if fits else 'do NOT fit'}"
                     + ("" if fits else " (backend.cpu_init=true keeps weights on CPU for export)"))
    return "\n".join(lines)


def dry_run(cfg: DictConfig) -> Dict:
    """Validate `cfg` for the world its layout needs and print the plan; load nothing.

    What depends on this machine (missing checkpoints: planning happens before
    downloading; Transformer-Engine or CUDA for the layout: the plan is for the cluster)
    does not stop a dry run: it is listed under the plan instead.
    """
    world = int(cfg.run.world_size) if cfg.run.world_size is not None else required_world_size(cfg.parallel)
    problems = config_problems(cfg, world_size=world, check_inputs=False)
    if problems:
        raise ConfigError(problems)
    plan = make_plan(cfg, world)
    text = format_plan(plan, _gpu_bytes())
    notes = machine_problems(cfg) + checkpoint_problems(cfg.model)
    if launched_world_size(cfg) != world and cfg.run.world_size is None:
        text += f"\n  launch      {world} processes (this dry run was started as {launched_world_size(cfg)})"
    if notes:
        text += "\n  on this machine (fix before running here):\n" + "\n".join(f"    - {n}" for n in notes)
    print(text, flush=True)
    return plan.as_dict()


def _gpu_bytes() -> Optional[int]:
    import sys

    torch = sys.modules.get("torch")  # only when already imported: a dry run stays light
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    return None
