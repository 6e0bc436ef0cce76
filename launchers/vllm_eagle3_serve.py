"""Serve a target with an EAGLE3 draft in vLLM and print vLLM's acceptance length (runs in
vLLM's own environment; launchers/vllm_eagle3_check.sh drives it).

    python vllm_eagle3_serve.py --target DIR --draft DIR --prompts prompt_ids.json \\
        --draft-steps K --max-new-tokens N --dtype float32 --out vllm_acceptance.json

prompt_ids.json: the prompts' token ids as task=validate feeds them (chat template applied), so
both measure the same prompts. Greedy (temperature 0), one prompt at a time. From vLLM's
spec-decode counters (`llm.get_metrics()`): drafts (draft rounds, each verified by the next
target forward), draft tokens, accepted tokens, per position. Three figures:
- `acceptance_length`: generated tokens / draft rounds, the quantity task=validate measures
  (its "target steps" are draft rounds: one target forward, then the drafted tokens);
- `tokens_per_target_forward`: generated tokens / (prefills + verifications), which also
  counts the forward that verifies each answer's last drafts;
- `vllm_mean_acceptance_length`: 1 + accepted / drafts, what vLLM's own logs print (it counts
  drafts accepted past max_tokens too).
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: counters readable here


def counters(llm) -> dict:
    out = {}
    for metric in llm.get_metrics():
        name = metric.name.removeprefix("vllm:").removesuffix("_total")
        if name.startswith("spec_decode_"):
            out[name] = list(metric.values) if hasattr(metric, "values") else metric.value
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--draft", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--draft-steps", type=int, required=True)
    ap.add_argument("--max-new-tokens", type=int, required=True)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--memory-fraction", type=float, default=0.05)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = json.loads(open(args.prompts).read())
    llm = LLM(model=args.target, dtype=args.dtype, enforce_eager=True, distributed_executor_backend="uni",
              max_model_len=1024, seed=0, disable_log_stats=False,
              gpu_memory_utilization=args.memory_fraction,  # on CPU: the share of RAM vLLM reserves
              speculative_config={"method": "eagle3", "model": args.draft,
                                  "num_speculative_tokens": args.draft_steps})
    params = SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens)
    generated, outputs = 0, []
    for ids in prompts:  # one at a time: no batching effects on what is drafted
        out = llm.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)[0].outputs[0]
        generated += len(out.token_ids)
        outputs.append(list(out.token_ids))
    c = counters(llm)
    drafts = c["spec_decode_num_drafts"]
    accepted = c["spec_decode_num_accepted_tokens"]
    per_pos = c.get("spec_decode_num_accepted_tokens_per_pos") or []
    result = {"acceptance_length": generated / max(drafts, 1),
              "tokens_per_target_forward": generated / (len(prompts) + drafts),
              "vllm_mean_acceptance_length": 1 + accepted / max(drafts, 1),
              "per_position": [a / max(drafts, 1) for a in per_pos],
              "generated_tokens": generated, "target_forwards": len(prompts) + drafts, "drafts": drafts,
              "draft_tokens": c.get("spec_decode_num_draft_tokens"), "accepted_tokens": accepted,
              "prompts": len(prompts), "draft_steps": args.draft_steps, "outputs": outputs}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"vLLM: AL {result['acceptance_length']:.3f} (generated / draft rounds), "
          f"{result['tokens_per_target_forward']:.3f} tokens per target forward, "
          f"vLLM's mean acceptance length {result['vllm_mean_acceptance_length']:.3f}, "
          f"{generated} tokens, {drafts} drafts, {accepted} accepted", flush=True)


if __name__ == "__main__":
    main()
