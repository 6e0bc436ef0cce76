"""The megatron EAGLE3 draft: its conversion, and its weights in and out of the hf layout (what
backend=hf's `export_speculative_decoding` writes, what vLLM / SGLang / TensorRT-LLM load).

- convert: the draft shaped like one target layer (optmodel.speculative.convert.eagle_config,
  the hf path's config), built on megatron-core's local spec without Transformer-Engine
  (optmodel.backends.megatron_compat, "ModelOpt EAGLE");
- export: ModelOpt's Megatron exporter rules give the draft's tensors under HF names (TP
  shards gathered first); they are loaded into the hf plugin's draft over the target's
  embeddings and LM head (ModelOpt's FakeBaseModel) and written by `export_speculative_decoding`,
  so both backends' exports are one layout;
- attach: an exported draft onto the megatron target through ModelOpt's Megatron importer
  (QKV / gated-MLP merging, this rank's TP slices).
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Optional

from optmodel.backends.megatron_compat import eagle_on_local_spec
from optmodel.backends.megatron_cpu import tensor_cuda_is_identity
from optmodel.distributed import barrier, is_rank0
from optmodel.speculative import draft
from optmodel.speculative.convert import (DraftSpec, convert as hf_convert, eagle_config, load_offline_base, set_draft_vocab)
from optmodel.speculative.draft import spec_of_export

# ModelOpt 0.46.1's two EAGLE3 exporters name the draft layers differently: its Megatron rules
# write the older `midlayer.` / `midlayer.<i>.` (LlamaForCausalLMEagle3 / ...Eagle3Deep, the
# layers after the first with their input norm as `hidden_norm`), its hf plugin `layers.<i>.`.
MEGATRON_RULES = {True: "LlamaForCausalLMEagle3", False: "LlamaForCausalLMEagle3Deep"}  # by "one layer"


def hf_name(key: str, one_layer: bool) -> str:
    """A Megatron-rule draft tensor name -> the hf plugin's."""
    if one_layer:
        return key.replace("midlayer.", "layers.0.", 1)
    if not key.startswith("midlayer."):
        return key
    index, rest = key[len("midlayer."):].split(".", 1)
    if index != "0" and rest.startswith("hidden_norm."):
        rest = rest.replace("hidden_norm.", "input_layernorm.", 1)
    return f"layers.{index}.{rest}"


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

    model = handle.model
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    cfg = eagle_config(target_text_config(handle), spec, dtype, offline=offline)
    torch.manual_seed(seed)  # the draft's initialisation (megatron-core draws it from torch's generator)
    with eagle_on_local_spec():
        mtsp.convert(model, [("eagle", cfg)])
    return set_draft_vocab(model, d2t)


def draft_state_dict(model) -> Dict[str, "torch.Tensor"]:  # noqa: F821
    """The draft's tensors under the hf plugin's names, through ModelOpt's Megatron exporter
    rules for LlamaForCausalLMEagle3 / ...Eagle3Deep (QKV / gated-MLP slicing included)."""
    from modelopt.torch.export.unified_export_megatron import GPTModelExporter

    one_layer = int(model.eagle_config.num_layers) == 1
    exporter = GPTModelExporter.__new__(GPTModelExporter)  # the rules alone: no HF config read
    exporter.model, exporter.dtype, exporter._state_dict = model, next(model.parameters()).dtype, {}
    exporter.exclude_modules, exporter.layer_config_dict, exporter.moe_router_dtype = [], {}, None
    exporter.rules = exporter._populate_rule_book()[MEGATRON_RULES[one_layer]]
    with tensor_cuda_is_identity(), whole_tensor_parallel_weights(model.eagle_module):
        exporter._get_eagle_module_state_dict()
        # copies: a renamed tensor may be the parameter itself, which holds its shard again after
        out = {hf_name(k, one_layer): v.detach().cpu().clone() for k, v in exporter._state_dict.items()}
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


def export(handle, out_dir: Path, notes: Optional[Dict[str, dict]] = None, deploy: str = "none") -> Path:
    """The draft in `deploy`'s serving layout (rank 0 writes), byte for byte the hf export's."""
    import torch

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
        draft.export(base, out_dir, notes=notes, deploy=deploy)
    barrier()
    return Path(out_dir)


def draft_import_rules(layer: int):
    """Where draft layer `layer`'s megatron modules (and, for layer 0, the draft's own) sit in the
    hf layout, as ModelOpt's Megatron importer mappings (QKV / gated-MLP merging, TP slicing):
    ModelOpt 0.46.1 has import rules for target models only, so these follow its Llama import
    rules with the draft's names."""
    from modelopt.torch.export.plugins.mcore_custom import (COL_TP, REPLICATE, ROW_TP, GatedMLPMerging,
                                                            NameRemapping, QKVMerging)

    prefix = f"layers.{layer}."
    return {
        "fc": NameRemapping("fc.", REPLICATE),
        "enorm": NameRemapping(f"{prefix}input_layernorm.", REPLICATE),  # the embeddings' norm (layer 0)
        # the hidden states' norm: EAGLE3's `hidden_norm` in layer 0, the plain input norm after it
        "input_layernorm": NameRemapping(f"{prefix}{'hidden_norm' if layer == 0 else 'input_layernorm'}.", REPLICATE),
        "linear_qkv": QKVMerging(f"{prefix}self_attn.", COL_TP),
        "linear_proj": NameRemapping(f"{prefix}self_attn.o_proj.", ROW_TP),
        "pre_mlp_layernorm": NameRemapping(f"{prefix}post_attention_layernorm.", REPLICATE),
        "linear_fc1": GatedMLPMerging(f"{prefix}mlp.", COL_TP),
        "linear_fc2": NameRemapping(f"{prefix}mlp.down_proj.", ROW_TP),
        "final_layernorm": NameRemapping("norm.", REPLICATE),
        "output_layer": NameRemapping("lm_head.", COL_TP),
    }


def load_draft(model, draft_dir: Path) -> None:
    """An exported (hf layout) draft's weights into the converted megatron model's draft,
    through ModelOpt's Megatron importer (this rank's TP slices)."""
    import torch
    from modelopt.torch.export.plugins.megatron_importer import GPTModelImporter

    importer = GPTModelImporter.__new__(GPTModelImporter)  # its rule machinery over the draft's safetensors
    importer.pretrained_model_path, importer.model = Path(draft_dir), model
    importer.dtype, importer.dequantize, importer.verbose = next(model.parameters()).dtype, False, False
    importer.disable_tqdm, importer.moe_router_dtype = True, None
    names = {"name_remapping": importer._name_remapping, "qkv_merging": importer._qkv_merging,
             "gated_mlp_merging": importer._gated_mlp_merging}

    def rule(key, module, layer=0):
        m = draft_import_rules(layer)[key]
        names[m.func_name](module, m.target_name_or_prefix, **m.func_kwargs)

    eagle = model.eagle_module
    with torch.no_grad(), tensor_cuda_is_identity():
        rule("fc", eagle.fc)
        rule("enorm", eagle.enorm)
        for i, layer in enumerate(eagle.decoder.layers):
            rule("input_layernorm", layer.input_layernorm, i)
            qkv = layer.self_attention.linear_qkv
            config = qkv.config
            # the importer reshapes QKV by config.hidden_size; EAGLE3's first layer takes [embeddings, hidden]
            qkv.config = copy.copy(config)
            qkv.config.hidden_size = qkv.weight.shape[1]
            try:
                rule("linear_qkv", qkv, i)
            finally:
                qkv.config = config
            rule("linear_proj", layer.self_attention.linear_proj, i)
            rule("pre_mlp_layernorm", layer.pre_mlp_layernorm, i)
            rule("linear_fc1", layer.mlp.linear_fc1, i)
            rule("linear_fc2", layer.mlp.linear_fc2, i)
        rule("final_layernorm", eagle.decoder.final_layernorm)
        if hasattr(eagle, "eagle_output_layer"):
            rule("output_layer", eagle.eagle_output_layer)


def attach(handle, draft_dir: Path):
    """Convert the megatron target with the exported draft's shape and load its weights."""
    from safetensors import safe_open

    spec, _ = spec_of_export(draft_dir)
    with safe_open(str(Path(draft_dir) / "model.safetensors"), "pt") as f:
        d2t = f.get_tensor("d2t") if "d2t" in f.keys() else None
    model = convert(handle, spec, d2t=d2t)
    load_draft(model, draft_dir)
    model.eval()
    return model
