"""The `optmodel` command: Hydra composes the config, `optmodel.run.execute` does the rest."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from optmodel.checked import override_problems, resolve_run_config
from optmodel.claim import probe_run_dir
from optmodel.compare.cli import main as compare
from optmodel.config.schema import register_schemas
from optmodel.console import quiet_console
from optmodel.distributed import detect_launch_env
from optmodel.facts.errors import ConfigError, MeasuredFailure
from optmodel.facts.paths import conf_dir
from optmodel.gate import EXIT_GATED, Gated
from optmodel.launch import signals
from optmodel.launch.plain import hand_to_launcher, note_run_dir, submitting_launcher
from optmodel.plan import dry_run
from optmodel.run import checked_config, execute, model_was_typed
from optmodel.tasks.registry import task_spec, task_specs

log = logging.getLogger("optmodel")

register_schemas(task_specs())


def run_dir_of(cfg: DictConfig) -> Path:
    if cfg.run.output_dir:
        return Path(cfg.run.output_dir)
    return Path(HydraConfig.get().runtime.output_dir)


def in_sweep() -> bool:
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def main() -> None:
    """Check the command line's overrides against the schemas, then let Hydra run
    (`optmodel compare ...` is a subcommand of its own, not a Hydra run)."""
    if sys.argv[1:2] == ["compare"]:
        sys.exit(compare(sys.argv[2:]))

    problems = override_problems(sys.argv[1:])
    if problems:
        refuse(problems)
    if shows_job_config(sys.argv[1:]):
        return print_job_config(sys.argv[1:])
    hydra_main()


def shows_job_config(argv) -> bool:
    """`--cfg job` (optionally `--resolve`) of a single run, with nothing else Hydra must handle."""
    flags = [a for a in argv if a.startswith("-")]
    asked = any(argv[i] in ("--cfg", "-c") and argv[i + 1:i + 2] == ["job"] for i in range(len(argv))) or "--cfg=job" in argv
    return asked and all(f in ("--cfg", "-c", "--cfg=job", "--resolve") for f in flags)


def print_job_config(argv) -> None:
    """What `--cfg job` prints is what runs: the composed config made concrete the way the run
    makes it (model=auto's config.json, run.load's model, canonical format names). Hydra's own
    --cfg job prints the composition before that (`???` for every number of model=auto)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    overrides = [a for i, a in enumerate(argv) if not a.startswith("-") and argv[i - 1:i] not in (["--cfg"], ["-c"])]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        composed = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(composed)  # model_was_typed reads the overrides there
    cfg = composed.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        cfg = resolve_run_config(cfg, model_was_typed())
    except ConfigError as err:
        refuse(err.problems)
    print(OmegaConf.to_yaml(cfg, resolve="--resolve" in argv), end="")


def refuse(problems) -> None:
    """A config problem is the user's to fix: the message, exit 2, no traceback."""
    print(f"error: {ConfigError(problems)}", file=sys.stderr)
    sys.exit(2)


class SettleBeforeRunDir(Callback):
    """Hydra creates the run dir (.hydra/, optmodel.log) before the task function runs. A
    plain run that validation refuses, or a dry run (which writes nothing), is settled here,
    before that: a refused run leaves no dir behind."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from omegaconf import open_dict

        HydraConfig.instance().set_config(config)  # what run_job does next: the checks read the choices
        if submitting_launcher():
            note_run_dir(config.hydra.run.dir)  # a refused submission removes only a dir made for it
            return  # the launcher checks, submits, and cleans its own refusals
        cfg = config.copy()
        with open_dict(cfg):
            del cfg["hydra"]
        try:
            # rank 0 alone probes the dir (the lock): ranks started together would find each other's probe
            probe = not cfg.run.dry_run and detect_launch_env().rank == 0
            problems = probe_run_dir(Path(config.hydra.run.dir), cfg.task.name, resume=bool(cfg.run.resume),
                                     resumable=cfg.task.name in task_specs() and task_spec(cfg.task.name).resumable
                                     ) if probe else []
            if problems:
                raise ConfigError(problems)
            cfg = checked_config(cfg)
            if cfg.run.dry_run:
                dry_run(cfg)
                sys.exit(0)
        except ConfigError as err:
            refuse(err.problems)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    status = hand_to_launcher()  # a plain run with the slurm / local_ranks launcher: submit it
    if status is not None:
        sys.exit(status)

    run_dir = run_dir_of(cfg)
    try:
        with quiet_console():  # library banners and warnings: optmodel.log only
            execute(cfg, run_dir)
    except ConfigError as err:
        if in_sweep():  # the launcher records it as this job's failure; the sweep goes on
            raise
        refuse(err.problems)
    except Gated as err:
        if in_sweep():  # the launcher records the job as gated; the sweep goes on
            raise
        print(f"gated: {err}", file=sys.stderr)
        sys.exit(EXIT_GATED)
    except MeasuredFailure as err:
        if in_sweep():
            raise
        # the run did its work and missed a bound it was given: one line; the manifest has the numbers
        print(f"optmodel: failed: {err} ({run_dir} records the run as failed)", file=sys.stderr, flush=True)
        sys.exit(1)
    except (signals.Terminated, KeyboardInterrupt) as err:
        if in_sweep():
            raise
        # A stop that was asked for: one line, no traceback; the manifest says how it ended.
        again = (f"continue it with run.resume=true run.output_dir={run_dir}" if task_spec(cfg.task.name).resumable
                 else "task={} starts over: rerun it with run.output_dir=<a new dir>".format(cfg.task.name))
        print(f"optmodel: {signals.interruption(err) or 'interrupted'}; {run_dir} records the run as failed; "
              f"{again}.", file=sys.stderr, flush=True)
        sys.exit(128 + (signals.requested() or 2))


if __name__ == "__main__":
    main()
