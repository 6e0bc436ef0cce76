"""Run `python -m optmodel <overrides>` in this process and record what ran underneath.

    python benchmarks/gpu/probe.py RECORD.json [--profile] -- <optmodel overrides>

The CLI runs unchanged; hooks on ModelOpt's, lm-eval's and torch's public entry points write
RECORD.json when it ends (also when it fails):
- `quant_calls`: calls of each fake-quant path ModelOpt can take — its Triton NVFP4 kernel
  (`triton_fp4_fake_quant_block`), its FP8 CUDA extension (`cuda_ext_fp8.<fn>`), its eager FP8
  fallback (`fp8_eager`) — and of optmodel's CPU block backend (`cpu_block_fakequant`).
- `calibration`: around `mtq.quantize`, the same forward loop timed bare first (a warm-up
  pass, then the timed pass), then `mtq.quantize` itself, then the loop again through the
  quantized model; seconds and ratios. With --profile on CUDA, one more pass of the loop
  under torch.profiler lists the CUDA kernels the quantized model launches (`cuda_kernels`).
- `loglikelihoods`: every (context, continuation) -> log-likelihood the lm-eval adapter
  reports through lm-eval's CacheHook.
- `process_groups`: the torch.distributed backend of every process group the run created.
"""

from __future__ import annotations

import collections
import functools
import json
import re
import runpy
import sys
import time
from pathlib import Path

RECORD = {"quant_calls": collections.Counter(), "calibration": None, "cuda_kernels": None,
          "profiler_error": None, "loglikelihoods": [], "process_groups": [], "exit_code": None, "error": None}
QUANT_KERNEL = re.compile(r"quant|e4m3|fp4|fp8|amax|mx", re.I)


def counted(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        RECORD["quant_calls"][name] += 1
        return fn(*args, **kwargs)
    return wrapper


class CountingExtension:
    """A ModelOpt CUDA extension module whose function calls are counted."""

    def __init__(self, ext, label):
        self._ext, self._label = ext, label

    def __getattr__(self, attr):
        value = getattr(self._ext, attr)
        return counted(f"{self._label}.{attr}", value) if callable(value) and not isinstance(value, type) else value


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, *args):
    sync()
    start = time.perf_counter()
    fn(*args)
    sync()
    return time.perf_counter() - start


def hook_quantize(profile: bool):
    import modelopt.torch.quantization as mtq

    real = mtq.quantize

    def quantize(model, config, forward_loop=None):
        if forward_loop is None:
            return real(model, config, forward_loop)
        timed(forward_loop, model)  # warm-up: allocator, kernels' first launches
        bare = timed(forward_loop, model)
        start = time.perf_counter()
        out = real(model, config, forward_loop)
        sync()
        calib = time.perf_counter() - start
        timed(forward_loop, out)  # warm-up of the fake-quant kernels (Triton compiles here)
        quantized = timed(forward_loop, out)
        RECORD["calibration"] = {"bare_forward_s": round(bare, 4), "quantize_s": round(calib, 4),
                                 "quantized_forward_s": round(quantized, 4),
                                 "quantize_over_bare": round(calib / max(bare, 1e-9), 2),
                                 "quantized_forward_over_bare": round(quantized / max(bare, 1e-9), 2)}
        if profile:
            profile_kernels(forward_loop, out)
        return out

    mtq.quantize = quantize


def profile_kernels(forward_loop, model):
    import torch
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        return
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            forward_loop(model)
            sync()
        names = collections.Counter(e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
        RECORD["cuda_kernels"] = {"total": sum(names.values()),
                                  "quantization": {n[:120]: c for n, c in names.items() if QUANT_KERNEL.search(n)}}
    except Exception as err:  # gVisor machines may lack CUPTI: the call counters still hold
        RECORD["profiler_error"] = f"{type(err).__name__}: {err}"


def install_hooks(profile: bool):
    import lm_eval.api.model as lm_model
    import modelopt.torch.quantization.tensor_quant as tensor_quant
    import torch.distributed as dist

    import modelopt.torch.kernels.quantization.gemm as triton_kernel
    from optmodel.quantization import cpu_fakequant

    if hasattr(triton_kernel, "fp4_fake_quant_block"):  # CUDA with Triton, compute >= 8.9
        triton_kernel.fp4_fake_quant_block = counted("triton_fp4_fake_quant_block", triton_kernel.fp4_fake_quant_block)
    tensor_quant.fp8_eager = counted("fp8_eager", tensor_quant.fp8_eager)
    real_ext = tensor_quant.get_cuda_ext_fp8

    def get_cuda_ext_fp8(*args, **kwargs):
        ext = real_ext(*args, **kwargs)
        return None if ext is None else CountingExtension(ext, "cuda_ext_fp8")

    tensor_quant.get_cuda_ext_fp8 = get_cuda_ext_fp8
    # register() hands the module's function to ModelOpt when a CPU run first needs it.
    cpu_fakequant.block_fake_quant = counted("cpu_block_fakequant", cpu_fakequant.block_fake_quant)
    hook_quantize(profile)

    real_add = lm_model.CacheHook.add_partial

    def add_partial(self, attr, req, res):
        if attr == "loglikelihood":
            RECORD["loglikelihoods"].append([list(req), float(res[0]), bool(res[1])])
        return real_add(self, attr, req, res)

    lm_model.CacheHook.add_partial = add_partial
    real_init = dist.init_process_group

    def init_process_group(*args, **kwargs):
        out = real_init(*args, **kwargs)
        RECORD["process_groups"].append(str(dist.get_backend()))
        return out

    dist.init_process_group = init_process_group


def main() -> None:
    argv = sys.argv[1:]
    record_path, rest = Path(argv[0]), argv[1:]
    profile = "--profile" in rest[: rest.index("--")] if "--" in rest else False
    overrides = rest[rest.index("--") + 1:] if "--" in rest else rest
    try:
        install_hooks(profile)
        sys.argv = ["optmodel", *overrides]
        runpy.run_module("optmodel", run_name="__main__", alter_sys=True)
        RECORD["exit_code"] = 0
    except SystemExit as exit_:
        RECORD["exit_code"] = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException as err:
        RECORD["exit_code"], RECORD["error"] = 1, f"{type(err).__name__}: {err}"
        raise
    finally:
        record_path.write_text(json.dumps(RECORD, indent=1) + "\n")
    sys.exit(RECORD["exit_code"])


if __name__ == "__main__":
    main()
