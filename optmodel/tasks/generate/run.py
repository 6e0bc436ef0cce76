"""task=generate: completions of prompts (from the config or a file) by the run's model,
greedy or sampled, saved to <run dir>/generations.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List

from optmodel.backends.megatron_checkpoint import preflight  # noqa: F401  (the registry calls it before the run)
from optmodel.distributed import is_rank0
from optmodel.facts.records import DataError, jsonl_rows


def read_prompts(task) -> List[str]:
    if not task.prompts_file:
        return [str(p) for p in task.prompts]
    path = Path(task.prompts_file)
    if path.suffix == ".jsonl":
        prompts = []
        for lineno, row in jsonl_rows(path, "task.prompts_file"):
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise DataError(f"task.prompts_file: {path} line {lineno} has no string field 'prompt'.")
            prompts.append(row["prompt"])
    else:
        prompts = [line for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise DataError(f"task.prompts_file: {path} holds no prompt.")
    return prompts


def run(ctx) -> Dict[str, Any]:
    cfg, task = ctx.cfg, ctx.cfg.task
    prompts = read_prompts(task)
    handle = ctx.load_model()
    tok = handle.tokenizer
    start = time.perf_counter()
    ids, new_ids = handle.generate_ids(prompts, max_new_tokens=task.max_new_tokens, do_sample=task.do_sample,
                                       temperature=task.temperature, top_p=task.top_p, top_k=task.top_k,
                                       batch_size=task.batch_size, seed=cfg.run.seed, chat_template=task.chat_template)
    seconds = time.perf_counter() - start
    rows = [
        {"prompt": p, "completion": tok.decode(n, skip_special_tokens=True), "prompt_tokens": len(i), "new_tokens": len(n)}
        for p, i, n in zip(prompts, ids, new_ids)
    ]
    new_tokens = sum(r["new_tokens"] for r in rows)
    metrics = {"prompts": len(rows), "new_tokens": new_tokens, "generate_seconds": round(seconds, 3),
               "tokens_per_second": round(new_tokens / seconds, 2) if seconds > 0 else None}
    ctx.write_file("generations", "generations.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    if is_rank0():
        mode = "greedy" if not task.do_sample else f"sampled (T={task.temperature}, top_p={task.top_p}, top_k={task.top_k})"
        lines = [f"optmodel generate: {cfg.model.name}, {mode}, {len(rows)} prompt(s)"]
        lines += [f"  {r['prompt']!r} -> {r['completion']!r}" for r in rows]
        print("\n".join(lines), flush=True)
    ctx.tracker.log(metrics)
    return metrics
