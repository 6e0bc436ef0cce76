"""task=prune: Minitron-style structured pruning of the run's model.

    data -> baseline -> importance (or cached scores) -> prune -> after -> outputs

Reads calibration and held-out data, loads the model, measures held-out perplexity (and
task.evaluate accuracy), scores every prunable dimension on the calibration batches (or
reuses task.scores), cuts the model to the target, measures again and saves the pruned
model, whose recorded architecture a later `run.load=<this run dir>` builds.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict

from optmodel.data.text import calibration_data, dataset_texts, pack
from optmodel.distributed import is_rank0
from optmodel.evaluation import evaluate_handle
from optmodel.evaluation.perplexity import handle_perplexity
from optmodel.facts.errors import ConfigError
from optmodel.pruning import scores as score_files
from optmodel.pruning.pruners import pruner_for
from optmodel.tasks.prune.spec import resolve_export_config

log = logging.getLogger("optmodel")


def run(ctx) -> Dict[str, Any]:
    cfg, task, data = ctx.cfg, ctx.cfg.task, ctx.cfg.data

    # data: problems surface before the model loads
    calib_records = dataset_texts(data, "calib") if not task.scores else None
    eval_records = dataset_texts(data, "eval") if task.perplexity else None
    handle = ctx.load_model()
    before = handle.architecture()
    export_config = resolve_export_config(cfg)
    metrics: Dict[str, Any] = {"parameters_before": before["parameters"],
                               "active_parameters_before": before["active_parameters"]}

    # baseline
    heldout = pack(handle.tokenizer, eval_records, data.seq_len, data.eval_max_sequences, "data.eval_path") if task.perplexity else None
    if heldout is not None:
        metrics["eval_tokens"] = heldout.numel()
        metrics["perplexity_before"] = handle_perplexity(handle, heldout, data.batch_size, "perplexity before")
    metrics.update(evaluate_handle(handle, task.evaluate, "before", seed=cfg.run.seed))

    # importance, counted: every forward the model makes from here to the pruned model
    pruner = pruner_for(handle, task, ctx.run_dir)
    forwards = _count_forwards(handle.model)
    start = time.perf_counter()
    shape = score_files.shape_of(before)
    if task.scores:
        scores = pruner.reuse(task.scores, shape)
        metrics["scores_reused"] = str(task.scores)
    else:
        calib = calibration_data(handle.tokenizer, calib_records, data) if calib_records is not None else None
        scores = pruner.score(calib.batches if calib else None)
        if calib is not None:
            metrics.update(calib.stats())
        if scores is not None:
            path = ctx.run_dir / score_files.SCORES_FILE
            if is_rank0():
                score_files.save(path, scores, shape, {"model": cfg.model.name, "source": str(handle.source)})
            ctx.record(outputs={"prune_scores": str(path)})

    # prune (mcore_minitron scores here: the timing covers both)
    info = pruner.prune(export_config, scores)
    metrics["scoring_seconds"] = round(time.perf_counter() - start, 3)
    if pruner.outputs:  # a library that writes its own scores cache (mcore_minitron)
        ctx.record(outputs=pruner.outputs)
    metrics["scoring_forwards"] = forwards.count
    forwards.remove()
    after = handle.architecture()
    metrics.update(parameters_after=after["parameters"], active_parameters_after=after["active_parameters"])
    ctx.record(pruning={"export_config": export_config, **info,
                        "target_params": task.target_params, "target_active_params": task.target_active_params})
    ctx.record_model(handle)

    # after
    if heldout is not None:
        metrics["perplexity_after"] = handle_perplexity(handle, heldout, data.batch_size, "perplexity after")
    metrics.update(evaluate_handle(handle, task.evaluate, "after", seed=cfg.run.seed))
    ctx.log_metrics(metrics)

    # outputs
    if task.save_model:
        ctx.save_model(handle)
    if is_rank0():
        print_summary(cfg, export_config, metrics)
    return metrics


def preflight(cfg) -> None:
    """Before the run dir is claimed: reused scores that lack the depth measure the target
    needs (a file scored with depth_importance=cosine holds no skip_loss) is a config error."""
    task = cfg.task
    export_config = resolve_export_config(cfg) or {}
    if task.scores and "num_layers" in export_config:
        problem = score_files.missing_depth_measure(task.scores, task.depth_importance or "skip_loss")
        if problem:
            raise ConfigError([problem])


class _count_forwards:
    """Counts the model's forward calls (a forward pre-hook on the top module)."""

    def __init__(self, model):
        self.count = 0
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.count += 1

    def remove(self):
        self._handle.remove()


def print_summary(cfg, export_config: Dict[str, int], metrics: Dict[str, Any]) -> None:
    target = ", ".join(f"{k}={v}" for k, v in export_config.items())
    lines = [f"optmodel prune: {cfg.model.name} -> {target}",
             f"  parameters  {metrics['parameters_before']:,} -> {metrics['parameters_after']:,}"
             + (f" (active {metrics['active_parameters_before']:,} -> {metrics['active_parameters_after']:,})"
                if metrics["active_parameters_before"] != metrics["parameters_before"] else "")]
    if "perplexity_before" in metrics:
        lines.append(f"  perplexity  {metrics['perplexity_before']:.3f} -> {metrics['perplexity_after']:.3f} "
                     f"on {metrics['eval_tokens']} held-out tokens")
    reused = metrics.get("scores_reused")
    lines.append(f"  importance  {'reused ' + reused if reused else 'scored'} in {metrics['scoring_seconds']:.1f} s")
    print("\n".join(lines), flush=True)
