"""task=eagle3_features: dump the target's hidden states (aux layers + final) for offline
EAGLE3 training. Sharded and resumable: rerun with task.output_dir=<the dir> after a kill
and the finished shards are kept, the unfinished one redone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from optmodel.speculative import workflow
from optmodel.speculative.convert import DraftSpec, aux_layer_ids
from optmodel.speculative.data import account_line, new_account


def run(ctx) -> Dict[str, Any]:
    task = ctx.cfg.task
    handle = ctx.load_model()
    account = new_account()
    rows = workflow.conversation_rows(handle.tokenizer, task, account)
    aux = aux_layer_ids(DraftSpec(aux_layer_ids=list(task.aux_layer_ids)), int(handle.cfg.model.num_layers))
    out = Path(task.output_dir).expanduser() if task.output_dir else ctx.run_dir / "features"
    manifest, written = handle.eagle3().dump_features(rows, out, aux, int(task.shard_size), str(handle.source),
                                                      int(task.batch_size), data=account)
    ctx.record(outputs={"features": str(out), "target": str(handle.source)}, data=account)
    metrics = {"rows": manifest["num_rows"], "shards": len(manifest["shards"]), "shards_written": len(written),
               "shards_kept": len(manifest["shards"]) - len(written)}
    ctx.log_metrics(metrics)
    print(f"optmodel eagle3_features: {metrics['rows']} rows in {metrics['shards']} shards "
          f"({metrics['shards_kept']} kept from an earlier run) -> {out}\n  data: {account_line(account)}", flush=True)
    return metrics
