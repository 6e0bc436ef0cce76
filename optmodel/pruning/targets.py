"""The pruned shape from `task.export_config` (Megatron-LM / ModelOpt names) or a parameter
budget `task.target_params`, its parameter count, and every reason a target cannot be built.

Arithmetic on the model config only (ModelConfig field names): validation calls it before
anything is loaded, so nothing here imports torch, transformers or ModelOpt.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from optmodel.facts.errors import one_of
from optmodel.facts.layout import pipeline_stage_layers
from optmodel.plan import layer_params, moe_layers


# export_config key -> path in the model config
EXPORT_KEYS = {
    "num_layers": "num_layers",
    "hidden_size": "hidden_size",
    "ffn_hidden_size": "ffn_hidden_size",
    "num_attention_heads": "num_attention_heads",
    "num_query_groups": "num_query_groups",
    "num_moe_experts": "moe.num_experts",
    "moe_ffn_hidden_size": "moe.ffn_hidden_size",
    "moe_shared_expert_intermediate_size": "moe.shared_expert_ffn_hidden_size",
}
INT4_BLOCK = 128  # INT4 AWQ / W4A8 export needs in_features divisible by this
MAX_WIDTH_PRUNING, MAX_DEPTH_PRUNING = 0.4, 0.2  # target_params search space, as mcore_minitron's defaults


def _get(m: Dict[str, Any], path: str):
    for part in path.split("."):
        if m is None:
            return None
        m = m.get(part)
    return m


def _plain(model_cfg) -> Dict[str, Any]:
    return OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else copy.deepcopy(dict(model_cfg))


def current(model_cfg, key: str) -> Optional[int]:
    return _get(_plain(model_cfg), EXPORT_KEYS[key])


def pruned_model(model_cfg, export_config: Dict[str, int]) -> Dict[str, Any]:
    """The model config (plain dict) after pruning to `export_config`."""
    m = _plain(model_cfg)
    for key, value in export_config.items():
        *parents, leaf = EXPORT_KEYS[key].split(".")
        node = m
        for p in parents:
            node = node[p]
        node[leaf] = int(value)
    moe = m.get("moe")
    if moe and m.get("family") in _DEEPSEEK_FAMILIES and "moe_ffn_hidden_size" in export_config:
        # DeepSeek's config derives the shared expert's width from moe_intermediate_size
        old = _get(_plain(model_cfg), "moe.ffn_hidden_size")
        moe["shared_expert_ffn_hidden_size"] = moe["shared_expert_ffn_hidden_size"] // old * moe["ffn_hidden_size"]
    return m


_DEEPSEEK_FAMILIES = ("deepseek_v3", "deepseek_v2", "kimi_k2")


def parameters(m: Dict[str, Any]) -> Tuple[int, int]:
    """(total, active) parameters of a model config: embeddings, lm_head unless tied, final
    norm and every layer (active: top-k routed experts per MoE layer)."""
    mc = OmegaConf.create(m)
    vocab = mc.padded_vocab_size or mc.vocab_size
    outer = vocab * mc.hidden_size * (1 if mc.tied_embeddings else 2) + mc.hidden_size
    total = active = outer
    for is_moe in moe_layers(mc):
        total += layer_params(mc, is_moe, 1, 1, 1)
        if is_moe:
            routed = 3 * mc.hidden_size * mc.moe.ffn_hidden_size
            active += layer_params(mc, True, 1, 1, 1) - (mc.moe.num_experts - mc.moe.top_k) * routed
        else:
            active += layer_params(mc, False, 1, 1, 1)
    return total, active


def export_problems(model_cfg, export_config, parallel=None, field: str = "task.export_config") -> Tuple[List[str], List[str]]:
    """(problems, warnings) of pruning `model_cfg` to `export_config`."""
    m = _plain(model_cfg)
    problems: List[str] = []
    warnings: List[str] = []
    for key, value in export_config.items():
        if (p := one_of(f"{field}", key, EXPORT_KEYS)):
            problems.append(p.replace("unknown value", "unknown key"))
            continue
        now = _get(m, EXPORT_KEYS[key])
        if now is None:
            what = "query groups (it uses MLA)" if key == "num_query_groups" else "mixture-of-experts layers"
            if key == "moe_shared_expert_intermediate_size" and m.get("moe"):
                what = "shared expert"
            problems.append(f"{field}.{key}: model {m['name']} has no {what}. Fix: drop {key} from the export_config.")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{field}.{key}: must be a positive integer, got {value!r}.")
        elif value > now:
            problems.append(f"{field}.{key}: {value} is larger than the model's {now}; pruning only removes. Fix: a value <= {now}.")
        elif now == 0:
            problems.append(f"{field}.{key}: model {m['name']} has no {key}.")
    if problems:
        return problems, warnings
    new = pruned_model(m, export_config)
    moe = new.get("moe")
    if m.get("mla") and ({"num_attention_heads", "num_query_groups"} & export_config.keys()):
        problems.append(f"{field}.num_attention_heads: head pruning of multi-latent attention (model {m['name']}) is not "
                        f"supported. Fix: prune layers, hidden, experts or MoE FFN width instead.")
    elif "num_attention_heads" in export_config or "num_query_groups" in export_config:
        heads, groups = new["num_attention_heads"], new["num_query_groups"]
        rep = m["num_attention_heads"] // m["num_query_groups"]
        if heads % groups:
            problems.append(f"{field}.num_attention_heads: {heads} heads do not split into {groups} query groups (GQA needs "
                            f"groups to divide heads). Fix: a multiple of {groups}, e.g. {max(groups, heads - heads % groups)}.")
        elif heads // groups > rep:
            problems.append(f"{field}.num_attention_heads: {heads} heads over {groups} query groups is {heads // groups} per "
                            f"group, more than the model's {rep}; a group keeps only its own heads. Fix: at most "
                            f"{groups * rep} heads, or keep more query groups.")
    if moe and "num_moe_experts" in export_config:
        if moe["num_experts"] < moe["top_k"]:
            problems.append(f"{field}.num_moe_experts: {moe['num_experts']} experts are fewer than the router's top-k "
                            f"{moe['top_k']}. Fix: at least {moe['top_k']}.")
        elif moe["num_experts"] % (moe.get("router_num_groups") or 1):
            problems.append(f"{field}.num_moe_experts: {moe['num_experts']} experts do not split into the router's "
                            f"{moe['router_num_groups']} groups. Fix: a multiple of {moe['router_num_groups']}.")
    if "ffn_hidden_size" in export_config and not _has_dense(m):
        problems.append(f"{field}.ffn_hidden_size: every layer of model {m['name']} is MoE; there is no dense MLP. "
                        f"Fix: moe_ffn_hidden_size.")
    if moe and "moe_shared_expert_intermediate_size" in export_config and m.get("family") in _DEEPSEEK_FAMILIES:
        problems.append(f"{field}.moe_shared_expert_intermediate_size: model {m['name']} derives the shared expert width "
                        f"from moe_ffn_hidden_size (x shared experts). Fix: set moe_ffn_hidden_size only.")
    if parallel is not None and "num_layers" in export_config:
        try:
            pipeline_stage_layers(new["num_layers"], parallel)
        except ValueError as err:
            problems.append(f"{field}.num_layers: parallel={parallel.name} (PP {parallel.pipeline}): {err}. Fix: a layer "
                            f"count the stages hold, or set parallel.pipeline_first/last_stage_layers.")
    for key in ("hidden_size", "ffn_hidden_size", "moe_ffn_hidden_size"):
        if key in export_config and export_config[key] % INT4_BLOCK:
            warnings.append(f"{field}.{key}: {export_config[key]} is not a multiple of {INT4_BLOCK}: an INT4 AWQ / W4A8 "
                            f"export of the pruned model needs in_features divisible by {INT4_BLOCK}.")
    return problems, warnings


def _has_dense(m: Dict[str, Any]) -> bool:
    return False in moe_layers(OmegaConf.create(m))


def mixes_dense_and_moe(model_cfg) -> bool:
    """Both dense and MoE decoder layers (DeepSeek's first dense layers, Llama-4 Maverick)."""
    flags = moe_layers(OmegaConf.create(_plain(model_cfg)))
    return True in flags and False in flags


def _choices(full: int, floor_frac: float, step: int) -> List[int]:
    low = max(1, int(full * (1 - floor_frac)))
    values = {full} | {v for v in range(step, full, step) if v >= low}
    return sorted(values, reverse=True)


def candidates(m: Dict[str, Any]):
    """Export configs of the target_params search space: depth down to 80 %, widths to 60 %
    in 1/16 steps of each size (heads in whole query groups, experts >= top-k)."""
    space: Dict[str, List[int]] = {
        "num_layers": _choices(m["num_layers"], MAX_DEPTH_PRUNING, 1),
        "hidden_size": _choices(m["hidden_size"], MAX_WIDTH_PRUNING, max(1, m["hidden_size"] // 16)),
    }
    if _has_dense(m):
        space["ffn_hidden_size"] = _choices(m["ffn_hidden_size"], MAX_WIDTH_PRUNING, max(1, m["ffn_hidden_size"] // 16))
    if m.get("num_query_groups") and not m.get("mla"):
        g = m["num_query_groups"]
        space["num_attention_heads"] = [h for h in _choices(m["num_attention_heads"], MAX_WIDTH_PRUNING, g)]
    moe = m.get("moe")
    if moe:
        space["num_moe_experts"] = [e for e in _choices(moe["num_experts"], MAX_WIDTH_PRUNING, max(1, moe["num_experts"] // 16))
                                    if e >= moe["top_k"] and e % (moe.get("router_num_groups") or 1) == 0]
        space["moe_ffn_hidden_size"] = _choices(moe["ffn_hidden_size"], MAX_WIDTH_PRUNING, max(1, moe["ffn_hidden_size"] // 16))
    keys = list(space)
    for values in itertools.product(*(space[k] for k in keys)):
        yield {k: v for k, v in zip(keys, values) if v != current(m, k)}


def resolve_budget(model_cfg, target: int, active: bool = False) -> Tuple[Optional[Dict[str, int]], int]:
    """The export_config with the most parameters within `target` (total, or active for MoE)
    — as mcore_minitron ranks candidates before its score function; ties keep more layers —
    or (None, smallest count in the space) when no candidate fits."""
    m = _plain(model_cfg)
    best, best_key, smallest = None, None, None
    for cand in candidates(m):
        total, act = parameters(pruned_model(m, cand))
        n = act if active else total
        smallest = n if smallest is None else min(smallest, n)
        key = (n, cand.get("num_layers", m["num_layers"]), -len(cand))
        if n <= target and (best_key is None or key > best_key):
            best, best_key = cand, key
    return best, smallest or 0
