"""The GPU check's steps: every GPU-only path of optmodel, one summary.json of figures and verdicts.

    python benchmarks/gpu/check.py --out DIR [--cpu-rehearsal] [--fast] [--only a,b] [--budget-s 420]

Run by check.sh (which installs the wheelhouse first). Each step runs the real entrypoint
(`python -m optmodel ...`, through probe.py where the step asserts what ran underneath) in its
own process with a timeout, logs to DIR/logs/<step>.log, and records `passed`, `failed`,
`skipped` (with the reason) or `timeout` and its figures. `--cpu-rehearsal` runs the same steps
on this machine's CPU: CUDA-only steps are skipped and say so, and the kernel checks expect
the CPU paths instead (which proves the probe tells them apart). `--fast` keeps the steps CI
runs. The rehearsal calibrates and measures perplexity on small data (4 x 64 tokens). The summary's schema is in benchmarks/gpu/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAMPLE = ROOT / "tests" / "data" / "mmlu_sample"
SUBJECTS = "[" + ",".join(sorted(p.name for p in SAMPLE.iterdir() if p.is_dir())) + "]"  # the sample's 3
SCHEMA = 1
FAST_STEPS = ("environment", "requirements", "quantize_nvfp4")


class Skip(Exception):
    """The step cannot run here; the message says why."""


class Failed(Exception):
    """The step ran and a check failed; the message says which."""


class Check:
    def __init__(self, out: Path, cuda: bool, fast: bool, budget_s: float):
        self.out, self.cuda, self.fast = out, cuda, fast
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.runs = Path(os.environ.get("GPUCHECK_RUNS", "/tmp/optmodel_gpucheck"))
        self.deadline = time.monotonic() + budget_s
        self.steps: Dict[str, Dict[str, Any]] = {}
        self.records: Dict[str, dict] = {}
        self.background: Dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
                    "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.device = ["backend.device=cuda"] if cuda else ["backend.device=cpu"]
        # The rehearsal proves the script, not the numbers: small data keeps CPU runs short.
        self.small = [] if cuda else ["data.num_samples=4", "data.seq_len=64", "data.eval_max_sequences=4"]

    # --- running --------------------------------------------------------------------------
    def sh(self, step: str, cmd: List[str], timeout: float, check: bool = True) -> str:
        """Run `cmd`, its output appended to the step's log; returns the output."""
        timeout = min(timeout, self.deadline - time.monotonic())
        if timeout < 5:
            raise Skip("the check's time budget ran out before this command")
        log = self.logs / f"{step}.log"
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
            try:
                output, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the command and everything it started
                output, _ = proc.communicate()
                fh.write(output)
                raise TimeoutError(f"{cmd[:4]} ran past {timeout:.0f} s")
            fh.write(output + f"\n[exit {proc.returncode}]\n")
        if check and proc.returncode != 0:
            raise Failed(f"exit {proc.returncode}: {output.strip().splitlines()[-1] if output.strip() else ''}")
        return output

    def optmodel(self, step: str, overrides: List[str], timeout: float, profile: bool = False) -> dict:
        """`python -m optmodel <overrides>` under probe.py; the run dir's manifest + the probe record."""
        run_dir = self.runs / step
        shutil.rmtree(run_dir, ignore_errors=True)  # a rerun on the same machine starts clean
        record = self.logs / f"{step}.probe.json"
        cmd = [sys.executable, str(HERE / "probe.py"), str(record)] + (["--profile"] if profile else [])
        self.sh(step, cmd + ["--", *overrides, f"run.output_dir={run_dir}"], timeout, check=False)
        if not record.is_file():
            raise Failed(f"the probe wrote no record (see logs/{step}.log)")
        probe = json.loads(record.read_text())
        manifest_path = run_dir / "optmodel.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        if probe["exit_code"] != 0 or manifest.get("status") != "completed":
            raise Failed(f"optmodel exit {probe['exit_code']}, manifest status {manifest.get('status')}: "
                         f"{manifest.get('error') or probe.get('error') or 'see the log'}")
        self.records[step] = probe
        return {"run_dir": run_dir, "manifest": manifest, "probe": probe}

    def step(self, name: str, fn: Callable[[], Optional[dict]], cuda_only: bool = False) -> None:
        entry: Dict[str, Any] = {"status": "passed", "seconds": 0.0, "reason": None, "log": f"logs/{name}.log",
                                 "figures": {}}
        start = time.monotonic()
        print(f"[gpucheck] {name} ...", flush=True)
        try:
            if self.fast and name not in FAST_STEPS:
                raise Skip("not in the fast subset (--fast)")
            if cuda_only and not self.cuda:
                raise Skip("needs CUDA (CPU rehearsal)")
            entry["figures"] = fn() or {}
        except Skip as why:
            entry.update(status="skipped", reason=str(why))
        except TimeoutError as why:
            entry.update(status="timeout", reason=str(why))
        except Exception as why:  # a failed check or a crash: recorded, the next step still runs
            entry.update(status="failed", reason=f"{type(why).__name__}: {why}"[:2000])
        entry["seconds"] = round(time.monotonic() - start, 1)
        self.steps[name] = entry
        print(f"[gpucheck] {name}: {entry['status']} in {entry['seconds']} s"
              + (f" ({entry['reason']})" if entry["reason"] else ""), flush=True)

    # --- steps ----------------------------------------------------------------------------
    def environment(self) -> dict:
        code = ("import json, platform, importlib.metadata as md, torch\n"
                "names = ['torch', 'triton', 'transformers', 'tokenizers', 'nvidia-modelopt', 'megatron-core',"
                " 'hydra-core', 'omegaconf', 'lm_eval', 'accelerate', 'huggingface_hub', 'safetensors', 'numpy']\n"
                "v = {}\nfor n in names:\n    try: v[n] = md.version(n)\n    except md.PackageNotFoundError: v[n] = None\n"
                "gpu = torch.cuda.is_available()\n"
                "print(json.dumps({'python': platform.python_version(), 'torch_cuda': torch.version.cuda, 'cuda_available': gpu,"
                " 'gpu': torch.cuda.get_device_name(0) if gpu else None,"
                " 'capability': list(torch.cuda.get_device_capability(0)) if gpu else None,"
                " 'nccl': '.'.join(map(str, torch.cuda.nccl.version())) if gpu else None, 'versions': v}))")
        info = json.loads(self.sh("environment", [sys.executable, "-c", code], 120).strip().splitlines()[-1])
        if self.cuda:
            info["nvidia_smi"] = self.sh("environment", ["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                                         "--format=csv,noheader"], 30, check=False).strip()
            if not info["cuda_available"]:
                raise Failed("torch sees no CUDA device")
        self.environment_info = info
        return {"transformers": info["versions"]["transformers"], "torch": info["versions"]["torch"]}

    def requirements(self) -> dict:
        """Every carried package at its wheel's version, and its requirements met by what imports."""
        wanted = ROOT / ".wheelhouse" / "requirements.txt"
        if not wanted.is_file():
            if self.cuda:
                raise Failed("no .wheelhouse/requirements.txt: run benchmarks/gpu/wheelhouse.sh and carry .wheelhouse")
            wanted_lines = self.sh("requirements", [sys.executable, str(HERE / "missing.py")], 120).split()
        else:
            wanted_lines = wanted.read_text().split()
        out = self.sh("requirements", [sys.executable, str(HERE / "requirements_check.py"), *wanted_lines], 120)
        report = json.loads(out.strip().splitlines()[-1])
        if report["problems"]:
            raise Failed("; ".join(report["problems"][:10]))
        return {"packages_checked": report["checked"]}

    def cuda_ext_start(self) -> dict:
        """ModelOpt's FP8 fake-quant CUDA extension, compiled in the background (JIT, nvcc + ninja)."""
        code = ("import time; t = time.time()\nfrom modelopt.torch.quantization.extensions import get_cuda_ext_fp8\n"
                "get_cuda_ext_fp8(raise_if_failed=True); print(f'built in {time.time() - t:.1f} s')")
        log = (self.logs / "cuda_ext_fp8.log").open("w")
        self.background["cuda_ext_fp8"] = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=self.env,
                                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return {}

    def cuda_ext_wait(self) -> dict:
        proc = self.background.get("cuda_ext_fp8")
        if proc is None:
            raise Skip("the build was not started")
        try:
            proc.wait(timeout=max(5.0, min(300.0, self.deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise TimeoutError("the FP8 extension build ran past its time")
        if proc.returncode != 0:
            raise Failed("ModelOpt's FP8 CUDA extension did not build (logs/cuda_ext_fp8.log): FP8 would run eager")
        return {}

    def gpu_tests(self) -> dict:
        junit = self.logs / "gpu_tests.xml"
        self.sh("gpu_tests", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                              f"--junitxml={junit}", "tests"], 300, check=False)
        import xml.etree.ElementTree as ET

        cases = {}
        for case in ET.parse(junit).iter("testcase"):
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
            cases[f"{case.get('classname')}::{case.get('name')}"] = {
                "outcome": kind, "message": next((c.get("message") for c in case if c.tag != "system-out"), None)}
        counts = {k: sum(1 for c in cases.values() if c["outcome"] == k) for k in ("passed", "failure", "error", "skipped")}
        if not cases:
            raise Failed("no gpu-marked test was collected")
        if not self.cuda:
            raise Skip(f"needs CUDA: {len(cases)} gpu tests collected, {counts['skipped']} skipped")
        if counts["failure"] or counts["error"]:
            bad = [f"{n}: {c['message']}" for n, c in cases.items() if c["outcome"] in ("failure", "error")]
            raise Failed(f"{counts['failure'] + counts['error']} of {len(cases)} gpu tests failed: " + " | ".join(bad)[:1500])
        return {"tests": counts, "cases": cases}

    def quantize(self, step: str, fmt: str, algo: str) -> dict:
        run = self.optmodel(step, [f"task.quant_cfg={fmt}", *self.device, *self.small], 240, profile=self.cuda)
        hf_quant = json.loads((run["run_dir"] / "export" / "hf_quant_config.json").read_text())
        if hf_quant["quantization"]["quant_algo"] != algo:
            raise Failed(f"export says quant_algo {hf_quant['quantization']['quant_algo']}, expected {algo}")
        calls, metrics = run["probe"]["quant_calls"], run["manifest"]["metrics"]
        expect_kernel(calls, fmt, self.cuda)
        return {"quant_algo": algo, "quant_calls": calls, "perplexity_before": metrics.get("perplexity_before"),
                "perplexity_after": metrics.get("perplexity_after"), "calibration": run["probe"]["calibration"],
                "cuda_kernels": run["probe"]["cuda_kernels"], "profiler_error": run["probe"]["profiler_error"]}

    def megatron(self, step: str, overrides: List[str], expect: Callable[[dict], dict]) -> dict:
        run = self.optmodel(step, ["backend=megatron", *self.device, *self.small, *overrides], 240)
        groups = run["probe"]["process_groups"]
        want = "nccl" if self.cuda else "gloo"
        if groups != [want]:
            raise Failed(f"process groups {groups}, expected one {want} world")
        return {"process_group": want, "world_size": run["manifest"].get("world", {}).get("size"), **expect(run)}

    def megatron_steps(self) -> None:
        convert_dir = self.runs / "megatron_convert"

        def convert(run):
            if not (run["run_dir"] / "model" / "metadata.json").is_file():
                raise Failed("no distributed checkpoint (model/metadata.json)")
            return {}

        def back(run):
            if not (run["run_dir"] / "export" / "config.json").is_file():
                raise Failed("no HF checkpoint (export/config.json)")
            return {}

        def quantize(run):
            hf_quant = json.loads((run["run_dir"] / "export" / "hf_quant_config.json").read_text())["quantization"]
            if hf_quant["quant_algo"] != "NVFP4":
                raise Failed(f"export says {hf_quant['quant_algo']}, expected NVFP4")
            expect_kernel(run["probe"]["quant_calls"], "NVFP4_DEFAULT_CFG", self.cuda)
            m = run["manifest"]["metrics"]
            return {k: m.get(k) for k in ("perplexity_before", "perplexity_after", "mmlu_before", "mmlu_after")} | {
                "quant_calls": run["probe"]["quant_calls"], "calibration": run["probe"]["calibration"]}

        def mmlu(run):
            m = run["manifest"]["metrics"]
            if m.get("mmlu_questions") != 30:
                raise Failed(f"{m.get('mmlu_questions')} questions scored, the sample holds 30")
            return {"mmlu": m["mmlu"], "mmlu_questions": m["mmlu_questions"]}

        self.step("megatron_convert", lambda: self.megatron("megatron_convert", ["task=convert"], convert))
        self.step("megatron_convert_back", lambda: self.megatron(
            "megatron_convert_back", ["task=convert", "task.direction=megatron_to_hf", f"task.load={convert_dir}"], back))
        self.step("megatron_quantize", lambda: self.megatron("megatron_quantize", [
            "task.quant_cfg=NVFP4_DEFAULT_CFG", "task.evaluate.mmlu=true", f"task.evaluate.data_dir={SAMPLE}",
            f"task.evaluate.subjects={SUBJECTS}"], quantize))
        self.step("megatron_mmlu", lambda: self.megatron("megatron_mmlu", ["task=mmlu", f"task.data_dir={SAMPLE}",
                                                                     f"task.subjects={SUBJECTS}"], mmlu))

    def loglikelihoods(self) -> dict:
        """lm-eval adapter log-likelihoods on the MMLU sample: CUDA vs CPU (hf), megatron vs hf."""
        runs = {}
        for device in (["cuda", "cpu"] if self.cuda else ["cpu"]):
            runs[device] = self.optmodel(f"loglikelihood_{device}", [
                "task=mmlu", f"task.data_dir={SAMPLE}", f"task.subjects={SUBJECTS}", f"backend.device={device}", "backend.dtype=float32"], 180)
        figures = {f"mmlu_{d}": r["manifest"]["metrics"]["mmlu"] for d, r in runs.items()}
        figures["requests"] = len(runs["cpu"]["probe"]["loglikelihoods"])
        if "cuda" in runs:
            figures["cuda_vs_cpu"] = compare(runs["cuda"]["probe"], runs["cpu"]["probe"])
            if figures["cuda_vs_cpu"]["max_abs_diff"] > 1e-3:
                raise Failed(f"CUDA and CPU log-likelihoods differ by up to {figures['cuda_vs_cpu']['max_abs_diff']:.2e}")
        if "megatron_mmlu" in self.records:  # same device, the other backend
            figures["megatron_vs_hf"] = compare(self.records["megatron_mmlu"], runs["cuda" if self.cuda else "cpu"]["probe"])
        return figures

    def memory_benchmark(self) -> dict:
        script = ROOT / "benchmarks" / "memory.py"
        if not script.is_file():
            raise Skip("benchmarks/memory.py does not exist yet")
        tail = self.sh("memory_benchmark", [sys.executable, str(script)], 180).strip().splitlines()[-20:]
        return {"output_tail": tail}

    # --- the whole check ------------------------------------------------------------------
    def run(self, only: Optional[List[str]]) -> dict:
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        start = time.monotonic()
        self.environment_info: Dict[str, Any] = {}
        plan = [
            ("environment", self.environment, False),
            ("requirements", self.requirements, False),
            ("cuda_ext_fp8_start", self.cuda_ext_start, True),
            ("gpu_tests", self.gpu_tests, False),
            ("quantize_nvfp4", lambda: self.quantize("quantize_nvfp4", "NVFP4_DEFAULT_CFG", "NVFP4"), False),
            ("cuda_ext_fp8", self.cuda_ext_wait, True),
            ("quantize_fp8", lambda: self.quantize("quantize_fp8", "FP8_DEFAULT_CFG", "FP8"), False),
            ("megatron", self.megatron_steps, None),
            ("loglikelihood", self.loglikelihoods, False),
            ("memory_benchmark", self.memory_benchmark, False),
        ]
        for name, fn, cuda_only in plan:
            if only and name not in only and not (name == "megatron" and any(o.startswith("megatron") for o in only)):
                continue
            if cuda_only is None:
                fn()  # a group that records its own steps
            else:
                self.step(name, fn, cuda_only)
        self.steps.pop("cuda_ext_fp8_start", None)
        bad = [n for n, s in self.steps.items() if s["status"] in ("failed", "timeout")]
        return {
            "schema": SCHEMA, "mode": "cuda" if self.cuda else "cpu-rehearsal", "fast": self.fast, "ok": not bad,
            "failed": bad, "started": started, "seconds": round(time.monotonic() - start, 1),
            "environment": self.environment_info, "steps": self.steps,
            "figures": {f"{n}.{k}": v for n, s in self.steps.items() for k, v in s["figures"].items() if k != "cases"},
        }


def expect_kernel(calls: Dict[str, int], fmt: str, cuda: bool) -> None:
    """Which fake-quant path calibrated: ModelOpt's CUDA kernels on a GPU, the CPU paths here."""
    nvfp4 = fmt.startswith("NVFP4")
    cpu_block = calls.get("cpu_block_fakequant", 0)
    if cuda:
        kernel = calls.get("triton_fp4_fake_quant_block", 0) if nvfp4 else sum(
            v for k, v in calls.items() if k.startswith("cuda_ext_fp8."))
        if not kernel or cpu_block:
            raise Failed(f"expected ModelOpt's CUDA {'Triton NVFP4' if nvfp4 else 'FP8 extension'} kernel and no CPU "
                         f"block fake-quant, got calls {calls}")
    else:
        if not (cpu_block if nvfp4 else calls.get("fp8_eager", 0)):
            raise Failed(f"expected the CPU {'block fake-quant backend' if nvfp4 else 'eager FP8'} path, got calls {calls}")


def compare(a: dict, b: dict) -> dict:
    """Differences of the log-likelihoods two runs gave for the same requests."""
    la = {json.dumps(req): ll for req, ll, _ in a["loglikelihoods"]}
    lb = {json.dumps(req): ll for req, ll, _ in b["loglikelihoods"]}
    common = sorted(set(la) & set(lb))
    if not common or len(common) != len(la) or len(common) != len(lb):
        raise Failed(f"the runs scored different requests ({len(la)} vs {len(lb)}, {len(common)} in common)")
    diffs = [abs(la[k] - lb[k]) for k in common]
    return {"requests": len(common), "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu-rehearsal", action="store_true", help="run on this CPU, skipping what needs CUDA")
    parser.add_argument("--fast", action="store_true", help=f"only {', '.join(FAST_STEPS)} (small data)")
    parser.add_argument("--only", help="comma-separated step names (a rerun of some)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="the whole check's time budget")
    args = parser.parse_args()
    check = Check(args.out, cuda=not args.cpu_rehearsal, fast=args.fast, budget_s=args.budget_s)
    summary = check.run(args.only.split(",") if args.only else None)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    width = max(len(n) for n in summary["steps"])
    for name, s in summary["steps"].items():
        print(f"{name:<{width}}  {s['status']:<8} {s['seconds']:>6.1f} s  {s['reason'] or ''}"[:160])
    print(f"gpucheck {summary['mode']}: {'ok' if summary['ok'] else 'FAILED: ' + ', '.join(summary['failed'])} "
          f"in {summary['seconds']} s -> {args.out / 'summary.json'}")
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
