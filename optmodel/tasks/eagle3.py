"""task=eagle3: train an EAGLE3 draft for the run's model (the target) and export it.

    optmodel task=eagle3                                         # tiny target, bundled conversations
    optmodel task=eagle3 task.offline_data=<eagle3_features run>/features   # from dumped features

Online, the frozen target runs in memory and AL is measured before training, every
task.al_every steps and at the end. Offline, only the target's embeddings and LM head are
loaded; measure AL afterwards with task=validate run.load=<this run>. The run records the
draft (`outputs.draft`, the serving layout) and its target (`outputs.target`, also the
run's `saved_model`, so run.load=<this run> gives task=validate the target back)."""

from __future__ import annotations

from typing import Any, Dict

from optmodel.distributed import is_rank0
from optmodel.speculative import workflow


def run(ctx) -> Dict[str, Any]:
    cfg, task = ctx.cfg, ctx.cfg.task
    if task.offline_data:
        from optmodel.speculative.features import read_manifest

        target = read_manifest(task.offline_data)["target"]
        model, metrics = workflow.offline(target, task.offline_data, task, ctx.run_dir, cfg.backend, cfg.run.seed,
                                          ctx.tracker.log)
    else:
        handle = ctx.load_model()
        ctx.record_model(handle)  # the target's shape, before the draft is attached
        target = str(handle.source)
        model = handle.model
        metrics = workflow.online(model, handle.tokenizer, task, ctx.run_dir, cfg.run.seed, ctx.tracker.log)
    ctx.record(outputs={"target": target, "saved_model": target},
               speculative={"algorithm": "eagle3", "offline": bool(task.offline_data),
                            "aux_layer_ids": list(model.eagle_config.eagle_aux_hidden_state_layer_ids),
                            "draft_vocab_size": int(model.eagle_config.draft_vocab_size),
                            "draft_layers": int(task.draft_layers), "ttt_steps": int(task.ttt_steps)})
    if task.export:
        if is_rank0():
            workflow.export_draft(model, ctx.run_dir, target)
        ctx.record(outputs={"draft": str(ctx.run_dir / workflow.DRAFT_DIR)})
    ctx.record(metrics={"al_history": metrics.pop("al_history", [])})
    ctx.log_metrics(metrics)
    if is_rank0():
        print(f"optmodel eagle3: {cfg.model.name}, {metrics['train_steps']} steps, "
              f"{metrics['train_tokens_per_second']:.0f} tokens/s, AL {metrics.get('al_before')} -> {metrics.get('al_after')}",
              flush=True)
    return metrics
