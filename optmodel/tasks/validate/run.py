"""task=validate: acceptance length of an EAGLE3 draft against its target, greedy.

    optmodel task=validate run.load=<eagle3 run>             # the run's target and exported draft
    optmodel task=validate task.draft=<exported draft dir>   # any draft for the run's model

The exported draft is put back onto the target through ModelOpt (`mtsp.convert` with the
draft's shape, then its weights); AL and per-position acceptance come from
optmodel.speculative.acceptance and go to <run dir>/acceptance.json."""

from __future__ import annotations

import json
from typing import Any, Dict

from optmodel.distributed import is_rank0
from optmodel.speculative.workflow import al_prompts
from optmodel.tasks.validate.spec import draft_dir


def run(ctx) -> Dict[str, Any]:
    cfg, acc = ctx.cfg, ctx.cfg.task.acceptance
    handle = ctx.load_model()
    path = draft_dir(cfg)
    ops = handle.eagle3()
    ops.attach(path)
    result = ops.measure(handle.tokenizer, al_prompts(acc), int(acc.max_new_tokens), int(acc.draft_steps))
    ctx.write_file("acceptance", "acceptance.json", json.dumps({"draft": str(path), **result}, indent=2))
    ctx.record(outputs={"draft": str(path)})
    ctx.log_metrics({k: v for k, v in result.items() if k != "per_position"})
    ctx.record(metrics={"per_position": result["per_position"]})
    if is_rank0():
        rates = " ".join(f"{r:.2f}" for r in result["per_position"])
        print(f"optmodel validate: AL {result['acceptance_length']:.3f} (AR {result['acceptance_rate']:.3f}) over "
              f"{result['prompts']} prompts, {result['draft_steps']} draft steps; per position {rates}", flush=True)
    return {k: v for k, v in result.items() if k != "per_position"}
