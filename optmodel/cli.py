"""The `optmodel` command: Hydra composes the config, `optmodel.run.execute` does the rest."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from optmodel.config.schema import register_schemas
from optmodel.paths import conf_dir

log = logging.getLogger("optmodel")

register_schemas()


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
        from optmodel.compare.cli import main as compare

        sys.exit(compare(sys.argv[2:]))
    from optmodel.config.overrides import override_problems

    problems = override_problems(sys.argv[1:]) or run_dir_problems(sys.argv[1:])
    if problems:
        from optmodel.config.errors import ConfigError

        print(f"error: {ConfigError(problems)}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


def run_dir_problems(argv) -> list:
    """run.output_dir is Hydra's run dir too (its .hydra/ and log go there): a dir that holds
    another run, or one in use, is refused before Hydra writes into it. Sweeps name their
    own job dirs, so this is for single runs."""
    if "-m" in argv or "--multirun" in argv or any(a.startswith("--cfg") or a in ("--help", "-h") for a in argv):
        return []
    values = dict(a.lstrip("+").split("=", 1) for a in argv if "=" in a and not a.startswith("-"))
    if not values.get("run.output_dir"):
        return []
    from optmodel.claim import probe_run_dir

    return probe_run_dir(Path(values["run.output_dir"]), values.get("task", "quantize"),
                         resume=values.get("run.resume", "false").lower() == "true")


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from optmodel.config.errors import ConfigError
    from optmodel.gate import EXIT_GATED, Gated
    from optmodel.launch.plain import hand_to_launcher
    from optmodel.run import execute

    status = hand_to_launcher()  # a plain run with the slurm / local_ranks launcher: submit it
    if status is not None:
        sys.exit(status)
    from optmodel.console import quiet_console

    try:
        with quiet_console():  # library banners and warnings: optmodel.log only
            execute(cfg, run_dir_of(cfg))
    except ConfigError as err:
        if in_sweep():  # the launcher records it as this job's failure; the sweep goes on
            raise
        # A config problem is the user's to fix: the message, no traceback.
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Gated as err:
        if in_sweep():  # the launcher records the job as gated; the sweep goes on
            raise
        print(f"gated: {err}", file=sys.stderr)
        sys.exit(EXIT_GATED)


if __name__ == "__main__":
    main()
