"""task=eagle3: train an EAGLE3 draft for the run's model (the target) and export it.

    optmodel task=eagle3                                         # tiny target, bundled conversations
    optmodel task=eagle3 task.offline_data=<eagle3_features run>/features   # from dumped features

Online, the frozen target runs in memory and AL is measured before training, every
task.al_every steps and at the end. The draft trains on the training stack every training
task shares (task.training: optimizer, steps, checkpoints every task.training.save_every steps
under <run dir>/checkpoints, run.resume=true run.output_dir=<run dir> continues them). Offline, the dumped hidden states stand for the target's
decoder (backend=hf loads only the target's embeddings and LM head); measure AL afterwards
with task=validate run.load=<this run>. The run records the
draft (`outputs.draft`, the serving layout) and its target (`outputs.target`, also the
run's `saved_model`, so run.load=<this run> gives task=validate the target back)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from optmodel.backends import train_eagle3_offline
from optmodel.console import rate
from optmodel.distributed import is_rank0
from optmodel.speculative import workflow
from optmodel.speculative.data import account_line


def run(ctx) -> Dict[str, Any]:
    cfg, task = ctx.cfg, ctx.cfg.task
    if task.offline_data:
        from optmodel.speculative.features import read_manifest

        target = read_manifest(task.offline_data)["target"]
        ops, metrics = train_eagle3_offline(cfg, ctx.load_model, task.offline_data, ctx.run_dir, ctx.tracker.log)
        model = ops.model
    else:
        handle = ctx.load_model()
        ctx.record_model(handle)  # the target's shape, before the draft is attached
        target = str(handle.source)
        ops = handle.eagle3()
        metrics = workflow.train_online(ops, handle.tokenizer, task, ctx.run_dir, cfg.run.seed, ctx.tracker.log,
                                        resume=bool(cfg.run.get("resume")))
        model = handle.model
    ctx.record(outputs={"target": target, "saved_model": target},
               speculative={"algorithm": "eagle3", "offline": bool(task.offline_data),
                            "aux_layer_ids": list(model.eagle_config.eagle_aux_hidden_state_layer_ids),
                            "draft_vocab_size": int(model.eagle_config.draft_vocab_size),
                            "draft_layers": int(task.draft_layers), "ttt_steps": int(task.ttt_steps)})
    if task.export:
        ops.export_draft(ctx.run_dir / workflow.DRAFT_DIR, workflow.draft_notes(target), task.deploy)
        ctx.record(outputs={"draft": str(ctx.run_dir / workflow.DRAFT_DIR)}, speculative={"deploy": task.deploy},
                   training={"student_output": "draft", "teacher": target})  # the draft learns from its target
    account = metrics.pop("data", None)
    ctx.record(metrics={"al_history": metrics.pop("al_history", [])}, data=account)
    ctx.log_metrics(metrics)
    if is_rank0():
        draft = str(ctx.run_dir / workflow.DRAFT_DIR) if task.export else None
        print(summary(cfg.model.name, metrics, account, target=target, draft=draft), flush=True)
    return metrics


def summary(model_name: str, metrics: Dict[str, Any], account, target: Optional[str] = None,
            draft: Optional[str] = None) -> str:
    """The run's closing lines: AL only where it was measured (offline training measures none);
    the draft is the student, its frozen target the teacher whose next tokens it learns."""
    al = [metrics.get("al_before"), metrics.get("al_after")]
    shown = f", AL {al[0]:.3f} -> {al[1]:.3f}" if None not in al else ""
    seen = f" ({metrics['train_tokens']} tokens seen)" if metrics.get("train_tokens") else ""
    line = (f"optmodel eagle3: {model_name}, {metrics['train_steps']} steps{seen}, "
            f"{rate(metrics['train_tokens_per_second'], 'tokens/s')}{shown}")
    if target:
        line += f"\n  teacher     {target} (the target, frozen)"
    if draft:
        line += f"\n  student     {draft} (the EAGLE3 draft)"
    return line + (f"\n  data: {account_line(account)}" if account else "")
