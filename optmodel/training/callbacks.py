"""Trainer callbacks: metrics to optmodel's tracker, and saving on preemption.

Preemption: SIGTERM (Slurm preemption, `kill`) and SIGUSR2 (Slurm's warning before the time
limit) only set a flag while the Trainer runs; at the end of the current optimizer step the
Trainer writes a checkpoint and stops — never a checkpoint of a half-done step. The signal is
then handed to whoever handled it before: under a submitit launcher that is its
checkpoint-and-requeue handler (inside `optmodel.launch.preemption.resumable`, so the job is
requeued and the requeued job resumes from that checkpoint); in a plain process, run.py's
handler, which ends the run as terminated (resume it with run.resume=true).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
from typing import Any, Dict, Iterator, List, Optional

from transformers import TrainerCallback

from optmodel.launch.preemption import resumable

log = logging.getLogger("optmodel")

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


def perplexity_of_loss(loss: Optional[float]) -> Optional[float]:
    if loss is None:
        return None
    return math.exp(min(loss, 50.0))


class MetricsCallback(TrainerCallback):
    """Every Trainer log (loss, grad norm, lr, eval loss) to the tracker, with the eval
    perplexity added; the history is kept for the manifest."""

    def __init__(self, tracker=None, prefix: str = "train"):
        self.tracker = tracker
        self.prefix = prefix
        self.history: List[Dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return control
        row = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
        # KD trainers report the KD loss as eval_loss and the student's LM loss as eval_ce_loss.
        lm_loss = row.get("eval_ce_loss", row.get("eval_loss"))
        if lm_loss is not None:
            row["eval_perplexity"] = perplexity_of_loss(lm_loss)
        row["step"] = state.global_step
        self.history.append(row)
        if self.tracker is not None:
            self.tracker.log({f"{self.prefix}/{k}": v for k, v in row.items() if k != "step"})
        return control


class StepHook(TrainerCallback):
    """`on_step(step, max_steps)` after every optimizer step (the megatron core's `on_step`
    argument on transformers' Trainer), e.g. EAGLE3's acceptance-length checks."""

    def __init__(self, on_step):
        self.on_step = on_step

    def on_step_end(self, args, state, control, **kwargs):
        self.on_step(state.global_step, state.max_steps)
        return control


class PreemptionCallback(TrainerCallback):
    """Save-and-stop at the next step end once a preemption signal arrived."""

    def __init__(self):
        self.signum: Optional[int] = None
        self.trainer = None  # set by `guard`, for `save_now`

    def handle(self, signum, frame) -> None:
        if self.signum is None:
            log.warning("signal %d: saving a checkpoint at the end of this training step, then stopping", signum)
        self.signum = signum

    def on_step_end(self, args, state, control, **kwargs):
        if self.signum is not None:
            control.should_save = True
            control.should_training_stop = True
        return control

    def save_now(self) -> None:
        """The `resumable` save hook: make sure a checkpoint of the current step exists."""
        from optmodel.training.checkpoints import CompleteMarker, is_complete
        from pathlib import Path

        trainer = self.trainer
        if trainer is None or trainer.state.global_step == 0:
            return
        path = Path(trainer.args.output_dir) / f"checkpoint-{trainer.state.global_step}"
        if not is_complete(path):
            trainer._save_checkpoint(trainer.model, trial=None)
            CompleteMarker().on_save(trainer.args, trainer.state, trainer.control)

    @contextlib.contextmanager
    def guard(self, trainer) -> Iterator[None]:
        """Run the enclosed `trainer.train()` with preemption signals deferred to step ends."""
        self.trainer = trainer
        in_main = threading.current_thread() is threading.main_thread()
        with resumable(self.save_now):
            previous = {s: signal.signal(s, self.handle) for s in PREEMPTION_SIGNALS} if in_main else {}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
            if self.signum is not None:  # checkpoint written: now let the earlier handler act
                self.save_now()
                handler = previous.get(self.signum)
                if callable(handler):
                    handler(self.signum, None)
                raise Preempted(
                    f"training stopped by signal {self.signum} after step {trainer.state.global_step}; "
                    f"the checkpoint in {trainer.args.output_dir} resumes it (run.resume=true)"
                )


class Preempted(RuntimeError):
    """Training was stopped by a preemption signal after saving a checkpoint."""
