"""Where one `optmodel` run's peak RSS comes from: RSS sampled every 5 ms, attributed to the
innermost of the named functions running at the time, plus the RSS once the libraries are
imported (the fixed overhead, before any model exists) and at each entry and exit.

    python benchmarks/memory_stages.py [--stage module:function ...] -- <optmodel overrides>

Default stages: the backends' load / import / save / export and the quantize task's
perplexity and calibration. A name seen twice is reported as name#2. Heavy libraries load
before the run: the first figure is what `torch`, transformers, ModelOpt and megatron-core cost.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import runpy
import sys
import threading
import time

DEFAULT_STAGES = (
    "optmodel.backends.hf:load", "optmodel.backends.hf:HFHandle.save", "optmodel.backends.hf:HFHandle.export",
    "optmodel.tasks.quantize.run:handle_perplexity", "optmodel.quantization.calibrate:quantize",
    "optmodel.backends.megatron:build", "optmodel.backends.megatron:import_hf",
    "optmodel.backends.megatron:load_distributed", "optmodel.backends.megatron:save_distributed",
    "optmodel.backends.megatron:export_hf",
)
# What a run imports before its model exists (optmodel.cli last: the order the CLI loads them in).
LIBRARIES = ("torch", "transformers", "modelopt.torch.quantization", "modelopt.torch.export", "megatron.core",
             "optmodel.cli")
PAGE = os.sysconf("SC_PAGE_SIZE")
GIB = 2**30


class Stages:
    def __init__(self):
        self.active = ["imports"]
        self.peaks: dict = {}
        self.seen: list = ["imports"]

    def sample_forever(self, period: float = 0.005) -> None:
        while True:
            self.note()
            time.sleep(period)

    def note(self) -> int:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        name = self.active[-1]
        self.peaks[name] = max(self.peaks.get(name, 0), rss)
        return rss

    def mark(self, what: str) -> None:
        print(f"[rss] {what}: {self.note() / GIB:.3f} GiB", file=sys.stderr, flush=True)

    def wrap(self, target: str) -> None:
        """Replace module:attr.path by a wrapper that opens a stage while it runs."""
        module, path = target.split(":")
        owner = importlib.import_module(module)
        *parents, leaf = path.split(".")
        for name in parents:
            owner = getattr(owner, name)
        function = getattr(owner, leaf)

        def staged(*args, **kwargs):
            name, n = path, 1
            while name in self.seen:
                n += 1
                name = f"{path}#{n}"
            self.mark(f"enter {name}")
            self.seen.append(name)
            self.active.append(name)
            try:
                return function(*args, **kwargs)
            finally:
                self.active.pop()
                self.mark(f"exit {name}")

        setattr(owner, leaf, staged)

    def report(self) -> None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"peak RSS of the run: {peak / GIB:.3f} GiB", file=sys.stderr)
        for name in self.seen:
            if name in self.peaks:
                print(f"  peak during {name}: {self.peaks[name] / GIB:.3f} GiB", file=sys.stderr)


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", action="append", help="module:function (repeatable; replaces the defaults)")
    args = parser.parse_args(argv[:split])
    stages = Stages()
    threading.Thread(target=stages.sample_forever, daemon=True).start()
    stages.mark("bare interpreter")
    for module in LIBRARIES:
        importlib.import_module(module)
    stages.mark("libraries imported (fixed overhead)")
    stages.active.append("run")
    stages.seen.append("run")
    for target in args.stage or DEFAULT_STAGES:
        stages.wrap(target)
    sys.argv = ["optmodel", *argv[split + 1:]]
    try:
        runpy.run_module("optmodel.cli", run_name="__main__")
    finally:
        stages.report()


if __name__ == "__main__":  # multiprocessing children (megatron's checkpointing) re-import this file
    main()
