"""EAGLE3 on a megatron-core target: ModelOpt's Megatron EAGLE (`mtsp.convert` of a GPTModel,
modelopt/torch/speculative/plugins/megatron_eagle.py), trained on the megatron training core
(optmodel.training.megatron), exported in the same HF layout as backend=hf's draft.

- convert: the draft shaped like one target layer (optmodel.speculative.convert.eagle_config,
  the hf path's config), built on megatron-core's local spec without Transformer-Engine
  (optmodel.backends.megatron_compat, "ModelOpt EAGLE");
- fit: the target frozen, the draft trained by megatron-core's schedule / DDP / optimizer,
  each micro-batch's loss ModelOpt's per-token EAGLE loss summed over the loss mask;
- export: ModelOpt's Megatron exporter rules give the draft's tensors under HF names; they are
  loaded into the hf plugin's draft over the target's embeddings and LM head (ModelOpt's
  FakeBaseModel) and written by `export_speculative_decoding`, so both backends' exports
  are one layout;
- attach: an exported draft onto the megatron target, through ModelOpt's Megatron importer
  (QKV / gated-MLP merging, TP slicing).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional

from optmodel.backends.megatron_compat import eagle_on_local_spec

log = logging.getLogger("optmodel")

# ModelOpt 0.46.1's two EAGLE3 exporters name the single draft layer differently: its Megatron
# rules write the older `midlayer.` (LlamaForCausalLMEagle3), its hf plugin `layers.0.`.
MEGATRON_LAYER_PREFIX = "midlayer."
HF_LAYER_PREFIX = "layers.0."


@contextlib.contextmanager
def eagle_scope(model):
    """What every forward of the converted model runs in: the local-spec adaptations, and the
    target's logits left in vocab shards (ModelOpt's EAGLE gathers them itself, as under
    Megatron-LM's parallel_output=True; the handle's GPTModel gathers in its output layer)."""
    layer = getattr(model, "output_layer", None)
    before = getattr(layer, "gather_output", None)
    if layer is not None:
        layer.gather_output = False
    try:
        with eagle_on_local_spec():
            yield
    finally:
        if layer is not None:
            layer.gather_output = before


def target_text_config(handle) -> SimpleNamespace:
    """The target's shape in HF config names (what convert.eagle_config sizes the draft from)."""
    m = handle.cfg.model
    return SimpleNamespace(num_hidden_layers=int(m.num_layers), hidden_size=int(m.hidden_size),
                           intermediate_size=int(m.ffn_hidden_size), num_attention_heads=int(m.num_attention_heads),
                           num_key_value_heads=int(m.num_query_groups or m.num_attention_heads),
                           head_dim=int(m.kv_channels), rms_norm_eps=float(m.norm_eps),
                           rope_theta=float(m.rope_theta), vocab_size=int(m.vocab_size))


def convert(handle, spec, d2t=None, offline: bool = False, seed: int = 0):
    """`mtsp.convert` of the handle's GPTModel in place (target frozen, draft trainable)."""
    import modelopt.torch.speculative as mtsp
    import torch

    from optmodel.speculative.convert import eagle_config

    model = handle.model
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    cfg = eagle_config(target_text_config(handle), spec, dtype, offline=offline)
    torch.manual_seed(seed)  # the draft's initialisation (megatron-core draws it from torch's generator)
    with eagle_on_local_spec():
        mtsp.convert(model, [("eagle", cfg)])
    if hasattr(model.eagle_module, "d2t"):
        if d2t is None:
            raise ValueError("draft_vocab_size < target vocab needs the d2t mapping (optmodel.speculative.vocab)")
        with torch.no_grad():
            model.eagle_module.d2t.copy_(d2t.to(model.eagle_module.d2t.device))
    return model


class EagleRows:
    """Training rows as stacked tensors (what the megatron training core's micro-batches index);
    offline rows (optmodel.speculative.features) also carry the target's dumped hidden states."""

    ONLINE = ("input_ids", "attention_mask", "loss_mask")
    OFFLINE = ("aux_hidden_states", "base_model_hidden_states")

    def __init__(self, rows: List[dict]):
        import torch

        offline = "base_model_outputs" in rows[0]
        self.fields = self.ONLINE + (self.OFFLINE if offline else ())
        for name in self.ONLINE:
            setattr(self, name, torch.stack([r[name] for r in rows]))
        for name in self.OFFLINE if offline else ():
            setattr(self, name, torch.stack([r["base_model_outputs"][name] for r in rows]))

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def forward_step(device):
    """megatron-core's forward_step_func: ModelOpt's EAGLE forward (per-token loss [b, s],
    the frozen target's own LM loss zeroed) masked by the rows' loss mask; offline rows hand
    it the dumped hidden states instead of running the target's decoder."""
    from optmodel.training.megatron_kd import loss_func

    def step(data_iterator, model):
        batch = next(data_iterator)
        ids = batch["input_ids"].to(device)
        loss_mask = (batch["loss_mask"] * batch["attention_mask"]).float().to(device)
        offline = {}
        if "aux_hidden_states" in batch:  # ModelOpt's eagle_offline forward takes them [s, b, h]
            offline = {"aux_hidden_states": batch["aux_hidden_states"].transpose(0, 1).contiguous().to(device),
                       "hidden_states": batch["base_model_hidden_states"].transpose(0, 1).contiguous().to(device)}
        with eagle_scope(unwrapped(model)):
            output = model(ids, labels=ids, **offline)
        return output, partial(loss_func, loss_mask, model)

    return step


def unwrapped(model):
    while hasattr(model, "module"):  # megatron-core's DDP wrapper
        model = model.module
    return model


def training_config(task, data_parallel: int):
    """The eagle3 task's training settings as the training core's TrainingConfig."""
    from omegaconf import OmegaConf

    from optmodel.training.config import TrainingConfig

    lr = float(task.lr)
    return OmegaConf.structured(TrainingConfig(
        max_steps=int(task.max_steps), micro_batch_size=int(task.batch_size),
        global_batch_size=int(task.batch_size) * int(task.grad_accum) * data_parallel, lr=lr,
        min_lr_ratio=min(1.0, float(task.min_lr) / lr) if lr > 0 else 0.0, lr_schedule="cosine",
        warmup_steps=int(task.warmup_steps), weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, clip_grad=1.0,
        log_every=int(task.log_steps), save_every=int(task.save_steps), keep_checkpoints=2))


def fit(handle, rows: List[dict], task, run_dir: Path, seed: int, on_step: Optional[Callable[[int, int], None]] = None,
        log_fn: Callable[[dict], None] = lambda m: None, paused: Optional[List[float]] = None) -> Dict[str, object]:
    """Train the converted handle's draft on `rows`; `on_step(step, steps)` after every
    optimizer step (AL checks); `paused[0]`: seconds spent in on_step, kept out of throughput."""
    from megatron.core import parallel_state

    from optmodel.speculative.train import CHECKPOINTS
    from optmodel.training.megatron import fit_megatron

    training = training_config(task, parallel_state.get_data_parallel_world_size())

    class Tracker:  # the training core logs train/<name>; the eagle3 task's tracker takes plain rows
        @staticmethod
        def log(row):
            log_fn(row)

    result = fit_megatron(handle, training, EagleRows(rows), output_dir=Path(run_dir) / CHECKPOINTS, seed=seed,
                          resume=bool(task.resume), tracker=Tracker, forward_step_fn=forward_step(handle.device),
                          kind="eagle3", on_step=on_step)
    seconds = max(float(result.metrics["train_seconds"]) - (paused[0] if paused else 0.0), 1e-9)
    steps = int(result.metrics["train_steps"]) - int(result.metrics["train_resumed_from_step"])
    tokens = steps * int(task.batch_size) * int(task.grad_accum) * int(task.seq_len)
    return {"train_loss": float(result.metrics["train_loss"]), "train_first_loss": result.metrics["train_first_loss"],
            "train_steps": int(result.metrics["train_steps"]),
            "train_seconds": seconds, "train_tokens_per_second": tokens / seconds}


def measure(handle, *args, **kwargs) -> dict:
    """optmodel.speculative.acceptance.measure on the converted megatron model."""
    from optmodel.speculative import acceptance

    with eagle_scope(handle.model):
        return acceptance.measure(handle.model, *args, **kwargs)


def draft_state_dict(model) -> Dict[str, "torch.Tensor"]:  # noqa: F821
    """The draft's tensors under the hf plugin's names, through ModelOpt's Megatron exporter
    rules for LlamaForCausalLMEagle3 (QKV / gated-MLP slicing included)."""
    from modelopt.torch.export.unified_export_megatron import GPTModelExporter

    from optmodel.backends.megatron_cpu import tensor_cuda_is_identity

    if int(model.eagle_config.num_layers) != 1:
        raise ValueError("the megatron draft export maps a one-layer draft (task.draft_layers=1)")
    exporter = GPTModelExporter.__new__(GPTModelExporter)  # the rules alone: no HF config read
    exporter.model, exporter.dtype, exporter._state_dict = model, next(model.parameters()).dtype, {}
    exporter.exclude_modules, exporter.layer_config_dict, exporter.moe_router_dtype = [], {}, None
    exporter.rules = exporter._populate_rule_book()["LlamaForCausalLMEagle3"]
    with tensor_cuda_is_identity(), whole_tensor_parallel_weights(model.eagle_module):
        exporter._get_eagle_module_state_dict()
        # copies: a renamed tensor may be the parameter itself, which holds its shard again after
        out = {k.replace(MEGATRON_LAYER_PREFIX, HF_LAYER_PREFIX, 1): v.detach().cpu().clone()
               for k, v in exporter._state_dict.items()}
    if hasattr(model.eagle_module, "d2t"):  # ModelOpt 0.46.1's exporter looks for `dt2` and skips it
        out["d2t"] = model.eagle_module.d2t.detach().cpu()
    return out


@contextlib.contextmanager
def whole_tensor_parallel_weights(module):
    """Every tensor-parallel parameter of `module` holding its whole (all-rank) tensor for the
    duration (the exporter's slicing rules assume TP 1), this rank's shard again after."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state

    world = parallel_state.get_tensor_model_parallel_world_size()
    shards = {}
    if world > 1:
        group = parallel_state.get_tensor_model_parallel_group()
        for name, param in module.named_parameters():
            if not getattr(param, "tensor_model_parallel", False):
                continue
            dim = int(param.partition_dim)
            parts = [torch.empty_like(param.data) for _ in range(world)]
            dist.all_gather(parts, param.data.contiguous(), group=group)
            if name.endswith("linear_fc1.weight") and param.data.shape[dim] % 2 == 0:
                # gated MLP: each rank holds [its gate rows; its up rows]
                halves = [p.chunk(2, dim=dim) for p in parts]
                parts = [h[0] for h in halves] + [h[1] for h in halves]
            shards[name] = param.data
            param.data = torch.cat(parts, dim=dim)
    try:
        yield
    finally:
        for name, param in module.named_parameters():
            if name in shards:
                param.data = shards[name]


def export(handle, out_dir: Path, notes: Optional[Dict[str, dict]] = None) -> Path:
    """The draft in the serving layout (rank 0 writes), byte for byte the hf export's layout."""
    import torch

    from optmodel.distributed import barrier, is_rank0
    from optmodel.speculative import draft
    from optmodel.speculative.convert import DraftSpec, convert as hf_convert, load_offline_base

    weights = draft_state_dict(handle.model)
    if is_rank0():
        eagle = handle.model.eagle_config
        spec = DraftSpec(num_layers=int(eagle.num_layers), aux_layer_ids=list(eagle.eagle_aux_hidden_state_layer_ids),
                         draft_vocab_size=int(eagle.draft_vocab_size), ttt_steps=int(handle.model.eagle_ttt_steps),
                         intermediate_size=int(eagle.ffn_hidden_size))
        dtype = next(handle.model.parameters()).dtype
        base = load_offline_base(str(handle.checkpoint)).to(dtype=dtype)
        base.model.dtype = base.config.dtype = dtype
        # FakeBaseModel's config lacks the rope base (it reads 10000): the draft's shape and rope
        # as trained on the megatron target
        for key, value in vars(target_text_config(handle)).items():
            setattr(base.config, key, value)
        hf_convert(base, spec, d2t=weights.get("d2t"), offline=True, num_layers=int(handle.cfg.model.num_layers))
        own = base.eagle_module.state_dict()
        if "lm_head.weight" not in own:  # the draft shares the target's LM head
            weights.pop("lm_head.weight", None)
        missing, unexpected = set(own) - set(weights), set(weights) - set(own)
        if missing or unexpected:
            raise ValueError(f"megatron draft -> hf names: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        with torch.no_grad():
            base.eagle_module.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
        draft.export(base, out_dir, notes=notes)
    barrier()
    return Path(out_dir)


class MegatronEagle3:
    """backend=megatron's EAGLE3 steps (the interface of optmodel.speculative.ops)."""

    def __init__(self, handle):
        self.handle = handle

    @property
    def model(self):
        return self.handle.model

    @property
    def vocab_size(self) -> int:
        return int(self.handle.cfg.model.vocab_size)

    def convert(self, spec, d2t=None, seed: int = 0):
        return convert(self.handle, spec, d2t=d2t, seed=seed)

    def measure(self, tokenizer, prompts: List[str], max_new_tokens: int = 64, draft_steps: int = 7) -> dict:
        return measure(self.handle, tokenizer, prompts, max_new_tokens, draft_steps)

    def fit(self, rows, task, run_dir: Path, seed: int, on_step=None, log_fn=lambda m: None, paused=None):
        return fit(self.handle, rows, task, run_dir, seed, on_step, log_fn, paused)

    def fit_offline(self, features_dir: Path, task, run_dir: Path, seed: int, log_fn=lambda m: None):
        """The draft trained from an eagle3_features dump (either backend's) in ModelOpt's
        eagle_offline mode: the target's embeddings and output layer only run."""
        from optmodel.speculative import features
        from optmodel.speculative.convert import DraftSpec
        from optmodel.speculative.workflow import vocab_mapping

        manifest = features.read_manifest(features_dir)
        spec = DraftSpec.from_cfg(task)
        spec.aux_layer_ids = list(manifest["aux_layer_ids"])
        dataset = features.FeaturesDataset(features_dir, dtype=next(self.model.parameters()).dtype)
        d2t = vocab_mapping(task, dataset.rows, self.vocab_size, Path(run_dir) / "draft_vocab")
        convert(self.handle, spec, d2t=d2t, offline=True, seed=seed)
        metrics = fit(self.handle, dataset.rows, task, run_dir, seed, None, log_fn)
        self.model.eval()
        return metrics

    def export_draft(self, out_dir: Path, notes: Optional[Dict[str, dict]] = None) -> Path:
        return export(self.handle, out_dir, notes)

    def attach(self, draft_dir: Path):
        return attach(self.handle, draft_dir)

    def dump_features(self, rows, out_dir: Path, aux_ids: List[int], shard_size: int, target: str, batch_size: int):
        from optmodel.speculative import features

        m = self.handle.cfg.model
        shape = {"hidden_size": int(m.hidden_size), "num_layers": int(m.num_layers), "vocab_size": int(m.vocab_size)}
        from optmodel.distributed import is_rank0

        # collective: every rank runs the sharded forward, rank 0 writes
        return features.dump(self.model, rows, out_dir, aux_ids, shard_size, target, batch_size,
                             hidden_states=lambda batch: target_hidden_states(self.handle, aux_ids, batch), shape=shape,
                             write=is_rank0())


def target_hidden_states(handle, aux_ids: List[int], batch) -> tuple:
    """(final normalized hidden, aux layers' outputs concatenated), [b, s, h] each, as the hf
    dump computes them: forward hooks on the decoder layers and the final norm of the
    target's megatron forward (full causal rows; right padding never reaches earlier positions)."""
    import torch

    model = handle.model
    captured: Dict[int, "torch.Tensor"] = {}

    def keep(key):
        def hook(module, inputs, output):
            captured[key] = (output if isinstance(output, torch.Tensor) else output[0]).detach()
        return hook

    hooks = [layer.register_forward_hook(keep(layer.layer_number - 1)) for layer in model.decoder.layers
             if layer.layer_number - 1 in aux_ids]
    if getattr(model.decoder, "final_layernorm", None) is not None:  # the last pipeline stage's
        hooks.append(model.decoder.final_layernorm.register_forward_hook(keep("final")))
    try:
        handle.logits(batch["input_ids"])
    finally:
        for h in hooks:
            h.remove()
    ids = batch["input_ids"]
    shape = (ids.shape[1], ids.shape[0], int(handle.cfg.model.hidden_size))
    found = {key: from_owning_stage(captured.get(key), shape, next(model.parameters()).dtype)
             for key in [*aux_ids, "final"]}
    # megatron's activations are [s, b, h]
    return (found["final"].transpose(0, 1).contiguous(),
            torch.cat([found[i] for i in aux_ids], dim=-1).transpose(0, 1).contiguous())


def from_owning_stage(tensor, shape, dtype):
    """`tensor` on every pipeline stage, sent by the one stage that computed it (PP 1: as is)."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state

    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return tensor
    group = parallel_state.get_pipeline_model_parallel_group()
    device = tensor.device if tensor is not None else torch.device("cpu")
    flags = [torch.zeros(1, device=device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(flags, torch.ones(1, device=device) if tensor is not None else torch.zeros(1, device=device),
                    group=group)
    owner = dist.get_global_rank(group, next(i for i, f in enumerate(flags) if f.item() > 0))
    buffer = tensor.contiguous() if tensor is not None else torch.empty(shape, dtype=dtype, device=device)
    dist.broadcast(buffer, src=owner, group=group)
    return buffer


def draft_import_rules():
    """Where each megatron draft module's weights sit in the hf layout, as ModelOpt's Megatron
    importer mappings (QKV / gated-MLP merging, TP slicing): ModelOpt 0.46.1 has import rules
    for target models only, so these follow its Llama import rules with the draft's names."""
    from modelopt.torch.export.plugins.mcore_custom import (COL_TP, REPLICATE, ROW_TP, GatedMLPMerging,
                                                            NameRemapping, QKVMerging)

    layer = HF_LAYER_PREFIX
    return {
        "fc": NameRemapping("fc.", REPLICATE),
        "enorm": NameRemapping(f"{layer}input_layernorm.", REPLICATE),
        "first_input_layernorm": NameRemapping(f"{layer}hidden_norm.", REPLICATE),
        "linear_qkv": QKVMerging(f"{layer}self_attn.", COL_TP),
        "linear_proj": NameRemapping(f"{layer}self_attn.o_proj.", ROW_TP),
        "pre_mlp_layernorm": NameRemapping(f"{layer}post_attention_layernorm.", REPLICATE),
        "linear_fc1": GatedMLPMerging(f"{layer}mlp.", COL_TP),
        "linear_fc2": NameRemapping(f"{layer}mlp.down_proj.", ROW_TP),
        "final_layernorm": NameRemapping("norm.", REPLICATE),
        "output_layer": NameRemapping("lm_head.", COL_TP),
    }


def load_draft(model, draft_dir: Path) -> None:
    """An exported (hf layout) one-layer draft's weights into the converted megatron model's
    draft, through ModelOpt's Megatron importer (this rank's TP slices)."""
    import torch
    from modelopt.torch.export.plugins.megatron_importer import GPTModelImporter

    from optmodel.backends.megatron_cpu import tensor_cuda_is_identity

    importer = GPTModelImporter.__new__(GPTModelImporter)  # its rule machinery over the draft's safetensors
    importer.pretrained_model_path, importer.model = Path(draft_dir), model
    importer.dtype, importer.dequantize, importer.verbose = next(model.parameters()).dtype, False, False
    importer.disable_tqdm, importer.moe_router_dtype = True, None
    mappings = draft_import_rules()
    names = {"name_remapping": importer._name_remapping, "qkv_merging": importer._qkv_merging,
             "gated_mlp_merging": importer._gated_mlp_merging}

    def rule(key, module):
        m = mappings[key]
        names[m.func_name](module, m.target_name_or_prefix, **m.func_kwargs)

    eagle = model.eagle_module
    layer = eagle.decoder.layers[0]
    with torch.no_grad(), tensor_cuda_is_identity():
        rule("fc", eagle.fc)
        rule("enorm", eagle.enorm)
        rule("first_input_layernorm", layer.input_layernorm)
        qkv = layer.self_attention.linear_qkv
        config = qkv.config
        # the importer reshapes QKV by config.hidden_size; EAGLE3's first layer takes [embeddings, hidden]
        qkv.config = copy.copy(config)
        qkv.config.hidden_size = qkv.weight.shape[1]
        try:
            rule("linear_qkv", qkv)
        finally:
            qkv.config = config
        rule("linear_proj", layer.self_attention.linear_proj)
        rule("pre_mlp_layernorm", layer.pre_mlp_layernorm)
        rule("linear_fc1", layer.mlp.linear_fc1)
        rule("linear_fc2", layer.mlp.linear_fc2)
        rule("final_layernorm", eagle.decoder.final_layernorm)
        if hasattr(eagle, "eagle_output_layer"):
            rule("output_layer", eagle.eagle_output_layer)


def attach(handle, draft_dir: Path):
    """Convert the megatron target with the exported draft's shape and load its weights."""
    from safetensors import safe_open

    from optmodel.speculative.draft import spec_of_export

    spec, _ = spec_of_export(draft_dir)
    with safe_open(str(Path(draft_dir) / "model.safetensors"), "pt") as f:
        d2t = f.get_tensor("d2t") if "d2t" in f.keys() else None
    model = convert(handle, spec, d2t=d2t)
    load_draft(model, draft_dir)
    model.eval()
    return model
