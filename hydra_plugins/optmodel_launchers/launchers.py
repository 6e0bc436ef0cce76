"""optmodel's Hydra launchers: local (in process), local ranks and Slurm (through submitit).

All three skip jobs that completed in an earlier run of the same sweep dir (resume),
record every job in <sweep dir>/sweep.json, write the sweep summary when the jobs are
done, and can stop at the first failure (fail_fast). The submitit ones make every task
one rank of a single process group (submitit's distributed env) writing one run dir.
Heavy imports (submitit, torch) stay inside methods: Hydra imports this module at startup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from optmodel.launch import preemption, resources, sweep, watch
from optmodel.launch.signals import Terminated
from optmodel.facts.rundir import read_manifest

log = logging.getLogger("optmodel")


def _job_config(launcher, overrides: Sequence[str], num: int) -> DictConfig:
    cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.num = num
        cfg.hydra.job.id = f"job_id_for_{num}"
    return cfg


def _run_dir(cfg: DictConfig) -> Path:
    if cfg.run.output_dir:
        return Path(cfg.run.output_dir)
    subdir = OmegaConf.select(cfg, "hydra.sweep.subdir")
    base = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir")))
    return base / str(subdir) if subdir is not None else base


def plan(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[Tuple[sweep.SweepJob, DictConfig]]:
    """Each job with its resolved config and run dir; completed ones marked skipped."""
    planned = []
    for offset, overrides in enumerate(job_overrides):
        num = initial_job_idx + offset
        cfg = _job_config(launcher, overrides, num)
        job = sweep.SweepJob(num=num, overrides=list(overrides), run_dir=str(_run_dir(cfg).absolute()))
        if sweep.already_done(job):
            job.state = "skipped"
            log.info("job %d (%s) already completed in %s: skipped", num, " ".join(filter_overrides(overrides)), job.run_dir)
        planned.append((job, cfg))
    return planned


def job_problems(job: sweep.SweepJob, cfg: DictConfig, world_size: Optional[int] = None,
                 check_inputs: bool = True) -> List[str]:
    """Every problem of one sweep job's config, prefixed with the job (run.load inherited first)."""
    from optmodel.facts.errors import ConfigError
    from optmodel.checked import resolve_run_config
    from optmodel.checked import config_problems

    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    typed = any(str(o).lstrip("+").startswith("model=") for o in list(job.overrides) + list(cfg.hydra.overrides.task))
    where = f"job {job.num} ({' '.join(filter_overrides(job.overrides)) or 'no overrides'})"
    try:
        job_cfg = resolve_run_config(job_cfg, typed_model=typed)
    except ConfigError as err:
        return [f"{where}: {p}" for p in err.problems]
    return [f"{where}: {p}" for p in config_problems(job_cfg, world_size=world_size, check_inputs=check_inputs)]


def refuse(problems: List[str]) -> None:
    """A sweep that cannot run: one message, no traceback, exit 2 (before any job starts)."""
    from optmodel.facts.errors import ConfigError

    print(f"error: {ConfigError(problems)}", file=sys.stderr, flush=True)
    sys.exit(2)


def _returned(job: sweep.SweepJob, value: Any = None, failed: Optional[BaseException] = None) -> JobReturn:
    ret = JobReturn(overrides=job.overrides, working_dir=job.run_dir)
    ret.status = JobStatus.FAILED if failed is not None else JobStatus.COMPLETED
    ret.return_value = failed if failed is not None else value
    return ret


def _is_plain_run(config: DictConfig) -> bool:
    """A plain run handed to this launcher lands in its own run dir (sweep subdir '.')."""
    return str(OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")) == "."


def finish_sweep(config: DictConfig, launcher_name: str, jobs: List[sweep.SweepJob], summarize: bool) -> None:
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep.write_record(sweep_dir, launcher_name, jobs, plain=_is_plain_run(config))
    if summarize and not _is_plain_run(config):
        from optmodel.launch.summary import write_summary

        paths = write_summary(sweep_dir)
        log.info("sweep summary: %s", ", ".join(str(p) for p in paths))
        print(f"sweep summary: {paths[1]}", flush=True)


class OptmodelLocalLauncher(BasicLauncher):
    """Hydra's basic launcher plus resume, fail-fast, the sweep record and summary."""

    def __init__(self, fail_fast: bool = False) -> None:
        super().__init__()
        self.fail_fast = fail_fast

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        planned = plan(self, job_overrides, initial_job_idx)
        problems = [p for job, cfg in planned if job.state != "skipped" for p in job_problems(job, cfg)]
        if problems:  # every job checked before the first one starts
            refuse(problems)
        returns, stop = [], False
        for job, cfg in planned:
            if job.state == "skipped":
                returns.append(_returned(job))
                continue
            if stop:
                job.state = "not run"
                job.error = "not run: fail_fast stopped the sweep"
                returns.append(_returned(job, failed=RuntimeError(job.error)))
                continue
            log.info("launching job %d: %s", job.num, " ".join(filter_overrides(job.overrides)))
            ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=cfg,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            job.state = "completed" if ret.status == JobStatus.COMPLETED else "failed"
            if _gated(ret):  # over its accuracy budget: an answer of the sweep, not a failure
                job.state, job.error = "gated", f"gated: {ret._return_value}"
                ret = _returned(job, value=job.error)
            elif ret.status != JobStatus.COMPLETED:
                job.error = f"{type(ret._return_value).__name__}: {ret._return_value}"
                stop = self.fail_fast
            returns.append(ret)
        finish_sweep(self.config, "local", [j for j, _ in planned], summarize=True)
        _exit_if_all_gated([j for j, _ in planned])
        return returns


def _gated(ret: JobReturn) -> bool:
    from optmodel.gate import Gated

    return ret.status == JobStatus.FAILED and isinstance(ret._return_value, Gated)


def _manifest_status(run_dir: str) -> Optional[str]:
    try:
        return read_manifest(Path(run_dir)).get("status")
    except (OSError, ValueError):
        return None


def _exit_if_all_gated(jobs: List[sweep.SweepJob]) -> None:
    """No job that ran stayed within its accuracy budget: exit status 3, as a single gated run."""
    ran = [j for j in jobs if j.state != "skipped"]
    if ran and all(j.state == "gated" for j in ran):
        from optmodel.gate import EXIT_GATED

        print("gated: every job of the sweep is over its accuracy budget (task.gate)", file=sys.stderr, flush=True)
        sys.exit(EXIT_GATED)


class _SubmititLauncher(BaseSubmititLauncher):
    """Shared by the local-ranks and Slurm launchers: one submitit job per sweep job."""

    def __call__(self, sweep_overrides: List[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: Dict[type, Singleton]) -> JobReturn:
        """Runs in every task of the job: become one rank, then run the Hydra job."""
        import submitit

        env = submitit.JobEnvironment()
        # RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT for optmodel.distributed.
        # Every rank keeps all of the node's GPUs visible; the rank picks cuda:LOCAL_RANK.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        os.environ.update({k: str(v) for k, v in (self.params.get("env") or {}).items()})
        if hasattr(signal, "SIGUSR2"):
            preemption.remember_submitit_handler(signal.getsignal(env._usr_sig()))
        Singleton.set_state(singleton_state)
        setup_globals()
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, sweep_overrides)
        with open_dict(cfg.hydra):
            cfg.hydra.job.id = env.job_id
            cfg.hydra.job.num = job_num
            if env.global_rank != 0:
                # One .hydra/ and one optmodel.log per run dir (rank 0's); other ranks log beside it.
                cfg.hydra.output_subdir = None
                if "file" in (OmegaConf.select(cfg, "hydra.job_logging.handlers") or {}):
                    cfg.hydra.job_logging.handlers.file.filename = str(
                        _run_dir(cfg).absolute() / f"{cfg.hydra.job.name}.rank{env.global_rank}.log")
        try:
            ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=cfg,
                          job_dir_key=job_dir_key, job_subdir_key="hydra.sweep.subdir")
        except Terminated as err:  # scancel / time limit: the rank's result says so
            ret = JobReturn(overrides=sweep_overrides, working_dir=str(_run_dir(cfg)))
            ret.status, ret.return_value = JobStatus.FAILED, err
        if ret.status == JobStatus.FAILED:  # pickled for the watcher: as text, which always survives
            ret.return_value = watch.RankError.of(ret._return_value)
        return ret

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's preemption / timeout hook: requeue only tasks that declared themselves resumable."""
        return preemption.checkpoint_submission(self, *args, **kwargs)

    # -- submission ------------------------------------------------------------------
    def _executor(self, alloc: resources.Allocation, job_name: str):
        raise NotImplementedError

    def _allocation(self, cfg: DictConfig) -> resources.Allocation:
        return resources.allocation(cfg.parallel, self.params.get("gpus_per_node"), self.params.get("nodes"),
                                    self.params.get("tasks_per_node"))

    def _check_layout(self, planned) -> None:
        """Refuse, before anything is submitted, a job whose layout does not fit its allocation
        (or, on Slurm, the partition's nodes)."""
        from optmodel.facts.errors import ConfigError
        from optmodel.checked import config_problems

        problems = resources.launcher_problems(self.params) + self._partition_problems()
        if problems:  # the numbers below are sized from these
            raise ConfigError(problems)
        for job, cfg in planned:
            if job.state == "skipped":
                continue
            alloc = self._allocation(cfg)
            job.nodes, job.tasks_per_node = alloc.nodes, alloc.tasks_per_node
            where = f"job {job.num} ({' '.join(filter_overrides(job.overrides)) or 'no overrides'}) on " \
                    f"{alloc.nodes} node(s) x {alloc.tasks_per_node} task(s)"
            job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            for p in config_problems(job_cfg, world_size=alloc.world_size, check_inputs=False):
                # Device checks belong to the compute node, not to the submitting machine.
                if self._gpus() and (p.startswith("backend.device:") or "this run is on CPU" in p):
                    continue
                problems.append(f"{where}: {p}")
            if self._partition() is not None:
                problems += [f"{where}: {p}" for p in resources.fit_problems(self._request(alloc), alloc, self._partition())]
        if self._EXECUTOR == "slurm":
            problems += resources.container_mount_problems(
                self.params.get("container_image"), self.params.get("container_mounts"),
                [str(Path(str(self.config.hydra.sweep.dir)).absolute())] + [j.run_dir for j, _ in planned])
        if problems:
            raise ConfigError(list(dict.fromkeys(problems)))

    def _partition(self):
        return None

    def _partition_problems(self) -> List[str]:
        return []

    def _gpus(self) -> int:
        return int(self.params.get("gpus_per_node") or 0)

    def _request(self, alloc: resources.Allocation) -> Dict[str, Any]:
        """The launcher options with the GPUs the job asks for: one per rank of a node (a
        1-rank job does not hold a node's 8), all of gpus_per_node when tasks_per_node is set."""
        gpus = self._gpus()
        if gpus and self.params.get("tasks_per_node") is None:
            gpus = min(gpus, alloc.tasks_per_node)
        return {**self.params, "gpus_per_node": gpus}

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from optmodel.config.validate import ConfigError

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        plain = _is_plain_run(self.config)
        if plain:  # a plain run's dir holds the run, not sweep files
            (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
        try:
            planned = plan(self, job_overrides, initial_job_idx)
            self._check_layout(planned)
        except ConfigError as err:  # the user's to fix: one message, no traceback
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        submitted = []
        record = lambda: sweep.write_record(sweep_dir, self._EXECUTOR, [j for j, _ in planned], plain=plain)  # noqa: E731
        with _submitter_stops(self._EXECUTOR, submitted, record):
            for job, cfg in planned:
                if job.state == "skipped":
                    continue
                alloc = resources.Allocation(job.nodes, job.tasks_per_node)
                executor = self._executor(alloc, str(self.params.get("name", "optmodel")))
                sub = executor.submit(self, list(job.overrides), "hydra.sweep.dir", job.num, f"job_id_for_{job.num}",
                                      Singleton.get_state())
                job.state, job.job_id, job.log = "submitted", str(sub.job_id), str(sub.paths.stdout)
                print(f"job {job.num} [{' '.join(filter_overrides(job.overrides)) or 'no overrides'}] -> "
                      f"{self._EXECUTOR} job {sub.job_id} ({alloc.nodes} node(s) x {alloc.tasks_per_node} rank(s)); "
                      f"run dir {job.run_dir}; log {sub.paths.stdout}", flush=True)
                submitted.append((job, sub))
            jobs = [j for j, _ in planned]
            record()
            if not self.params.get("wait", True):
                print(f"{len(submitted)} job(s) scheduled, not waiting (hydra.launcher.wait=false). State and "
                      f"results: python -m optmodel.launch.summary {sweep_dir}", flush=True)
                return [_returned(job, value=job.job_id) for job in jobs]
            watch.Watcher(self._EXECUTOR == "slurm", bool(self.params.get("fail_fast"))).wait(submitted, _report)
        finish_sweep(self.config, self._EXECUTOR, jobs, summarize=True)
        bad = [j for j in jobs if j.state not in ("completed", "skipped", "gated")]
        if bad:  # said once, without Hydra's traceback
            for j in bad:
                print(f"error: job {j.num} {j.state}: {j.error}", file=sys.stderr, flush=True)
            sys.exit(1)
        _exit_if_all_gated(jobs)
        return [_returned(job) for job in jobs]


def _report(job: sweep.SweepJob) -> None:
    """Each finished job, with rank 0's metrics when it completed (a job whose ranks ended
    Gated, over its accuracy budget, is `gated` as its manifest says, not failed)."""
    if job.state == "failed" and _manifest_status(job.run_dir) == "gated":
        job.state = "gated"
    if job.state == "completed":
        print(f"job {job.num} completed: {watch.metrics_line(job.run_dir) or 'no metrics'} ({job.run_dir})", flush=True)
    else:
        print(f"job {job.num} {job.state}: {job.error}", flush=True)


@contextlib.contextmanager
def _submitter_stops(executor: str, submitted, record):
    """Stopping the waiting command (Ctrl-C, kill) cancels the jobs it submitted that have no
    outcome yet, and says which: nothing is left queued behind a command that is gone."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    except KeyboardInterrupt:
        for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the cancelling short
            signal.signal(sig, signal.SIG_IGN)
        open_jobs = [(j, s) for j, s in submitted if j.state == "submitted"]
        for job, sub in open_jobs:
            sub.cancel(check=False)
            job.state, job.error = "cancelled", "cancelled: the submitting command was stopped"
        record()
        ids = ", ".join(str(s.job_id) for _, s in open_jobs) or "none"
        print(f"stopped: cancelled {executor} job(s) {ids} (hydra.launcher.wait=false leaves jobs running "
              f"after the command returns)", file=sys.stderr, flush=True)
        sys.exit(130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class OptmodelLocalRanksLauncher(_SubmititLauncher):
    _EXECUTOR = "local"

    def _executor(self, alloc: resources.Allocation, job_name: str):
        import submitit

        executor = submitit.LocalExecutor(folder=self.params["submitit_folder"],
                                          max_num_timeout=int(self.params.get("max_num_timeout", 3)))
        params = {"timeout_min": self.params.get("timeout_min", 1440), "tasks_per_node": alloc.tasks_per_node,
                  "signal_delay_s": self.params.get("signal_delay_s", 60)}
        if self._gpus():
            params["gpus_per_node"] = self._gpus()
        executor.update_parameters(**params)
        return executor

    def _allocation(self, cfg: DictConfig) -> resources.Allocation:
        # One machine: all ranks on it.
        alloc = resources.allocation(cfg.parallel, None, None, self.params.get("tasks_per_node"))
        return resources.Allocation(1, alloc.world_size)


class OptmodelSlurmLauncher(_SubmititLauncher):
    _EXECUTOR = "slurm"

    def _executor(self, alloc: resources.Allocation, job_name: str):
        import submitit

        python = self.params.get("python") or ("python" if self.params.get("container_image") else None)
        executor = submitit.SlurmExecutor(folder=self.params["submitit_folder"],
                                          max_num_timeout=int(self.params.get("max_num_timeout", 3)), python=python)
        part = self._partition()
        executor.update_parameters(**resources.slurm_parameters(self._request(alloc), alloc, job_name,
                                                                part.gpus if part else None))
        return executor

    def _partition(self):
        """The partition's nodes (sinfo), asked once per launch; None off a Slurm cluster."""
        if not hasattr(self, "_partition_info"):
            from optmodel.launch import slurm

            self._partition_info = slurm.partition(self.params.get("partition"))
        return self._partition_info

    def _partition_problems(self) -> List[str]:
        from optmodel.launch import slurm

        problem = resources.partition_problem(self.params.get("partition"), slurm.partition_names())
        return [problem] if problem else []

    def _request(self, alloc: resources.Allocation) -> Dict[str, Any]:
        """A CPU job's ranks share the node's CPUs (cpus_per_task), instead of Slurm's one CPU
        per task: a 1-rank CPU job would otherwise compute on a single core."""
        request = super()._request(alloc)
        part = self._partition()
        if request.get("cpus_per_task") is None and not request.get("gpus_per_node") and part and part.cpus:
            request["cpus_per_task"] = max(1, part.cpus // max(1, alloc.tasks_per_node))
        return request

    def _gpus(self) -> int:
        """gpus_per_node as given, else what the partition's nodes have (0 on a CPU partition)."""
        given = self.params.get("gpus_per_node")
        if given is not None:
            return int(given)
        part = self._partition()
        return part.gpus if part else 0

    def _allocation(self, cfg: DictConfig) -> resources.Allocation:
        part = self._partition()
        slots = part.cpus // int(self.params.get("cpus_per_task") or 1) if part and not self._gpus() else None
        return resources.allocation(cfg.parallel, self._gpus(), self.params.get("nodes"),
                                    self.params.get("tasks_per_node"), slots_per_node=slots)
