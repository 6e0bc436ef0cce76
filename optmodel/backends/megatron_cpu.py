"""What megatron-core 0.16 (and ModelOpt's Megatron plugins) need to run on CPU.

Used only by megatron runs on CPU (no GPU visible, or backend.device=cpu): GPU runs see
the libraries exactly as shipped. `apply_cpu_patches` replaces each CUDA call with its
CPU meaning (see the comment on each); `remove_cpu_patches` (called by
optmodel.backends.megatron_world.destroy_model_parallel) puts the originals back, so a process that
later runs on the GPU is unaffected. `apply_no_te_fixes` repairs two megatron-core
import-time assumptions that Transformer-Engine is present; it is needed wherever TE is
missing (always on CPU) and changes nothing where TE imports.
"""

from __future__ import annotations

import contextlib
import logging
import types

from optmodel.facts.machine import transformer_engine_usable

log = logging.getLogger("optmodel")


_ABSENT = object()
_saved: list = []  # (object, attribute, original value) of every active CPU patch


def _cpu_device() -> str:
    return "cpu"


def _no_sync(device=None) -> None:
    return None


class _CpuStream:
    """`torch.cuda.current_stream()` on CPU: CPU ops are synchronous, nothing to wait for."""

    def __init__(self, device=None):
        pass

    def wait_event(self, event) -> None:
        return None

    def wait_stream(self, stream) -> None:
        return None


def _patch(obj, name: str, value) -> None:
    _saved.append((obj, name, getattr(obj, name, _ABSENT)))
    setattr(obj, name, value)


def cpu_patches_active() -> bool:
    return bool(_saved)


def apply_cpu_patches() -> bool:
    """Patch the CUDA calls megatron-core makes on its CPU path (idempotent); True when active."""
    import torch
    from megatron.core.pipeline_parallel import schedules

    apply_no_te_fixes()
    if _saved:
        return True
    # megatron-core allocates buffers with `device=torch.cuda.current_device()` in 20+
    # places (tensor-parallel gathers, RoPE frequencies, MoE router state, attention
    # masks, pipeline p2p shape exchange). Every use passes it as a `device=` argument,
    # so "cpu" is the CPU meaning of "the current device".
    _patch(torch.cuda, "current_device", _cpu_device)
    # ModelOpt's Megatron extra-state hook (quantizer state in distributed checkpoints)
    # and megatron's pipeline p2p call torch.cuda.synchronize before reading tensors; CPU
    # ops are synchronous, so there is nothing to wait for.
    _patch(torch.cuda, "synchronize", _no_sync)
    # megatron-core 0.19's DDP grad sync (param_and_grad_buffer.start_grad_sync) waits on the
    # current CUDA stream for CUDA-graph replays before every reduce; CPU work has no stream.
    _patch(torch.cuda, "current_stream", _CpuStream)
    # megatron-core's pipeline schedules allocate their token counter with a hard-coded
    # device="cuda" (`total_num_tokens = torch.zeros(..., device="cuda")` in each
    # schedule). Only that module's view of `torch` changes: zeros(device="cuda") becomes
    # a CPU tensor, every other attribute is torch's own.
    _patch(schedules, "torch", _TorchWithCpuZeros(torch))
    # Sliding-window attention (gpt-oss) builds its mask with a hard-coded device="cuda"
    # (transformer/utils.py get_sliding_window_causal_mask); the same mask on CPU.
    from megatron.core.fusions import fused_softmax

    _patch(fused_softmax, "get_sliding_window_causal_mask", _sliding_window_causal_mask_cpu)
    _patch_fp32_optimizer(torch)
    log.info("megatron-core on CPU: using the adaptations of optmodel.backends.megatron_cpu")
    return True


def _patch_fp32_optimizer(torch) -> None:
    """megatron-core's FP32Optimizer (what `get_megatron_optimizer` returns for fp32 weights)
    and its gradient clipping, on CPU. Measured here without these: FP32Optimizer() raises
    "Torch not compiled with CUDA enabled" (optimizer.py: `_scale = torch.tensor([1.0],
    device='cuda')`), and so does its step (clip_grads.py's zeros(device='cuda') and
    utils.local_multi_tensor_l2_norm's tensor(device='cuda')); clip_grad_by_total_norm_fp32
    asserts `grad.type() == 'torch.cuda.FloatTensor'`. The same math on CPU tensors below.
    The bf16 optimizer (fp32 main copy of bf16 weights) runs on these too once built:
    see `cuda_type_names`. The distributed optimizer stays CUDA-only."""
    from megatron.core.optimizer import clip_grads
    from megatron.core.optimizer import optimizer as optimizers

    _patch(optimizers, "torch", _TorchWithCpuZeros(torch))
    _patch(clip_grads, "torch", _TorchWithCpuZeros(torch))
    _patch(clip_grads, "l2_norm_impl", _l2_norm_cpu)
    _patch(clip_grads, "multi_tensor_applier", _apply_cpu)
    _patch(optimizers, "clip_grad_by_total_norm_fp32", _clip_grad_by_total_norm_cpu)


def _apply_cpu(op, noop_flag, tensor_lists, *args):
    return op(0, noop_flag, tensor_lists, *args)


def _l2_norm_cpu(chunk_size, noop_flag, tensor_lists, per_tensor, *args):
    """multi_tensor_l2norm's result: ([1] global L2 norm, None)."""
    import torch

    norms = torch.stack([torch.linalg.vector_norm(t.float()) for t in tensor_lists[0]])
    return torch.linalg.vector_norm(norms).reshape(1), None


def _clip_grad_by_total_norm_cpu(parameters, max_norm, total_norm, use_decoupled_grad=False):
    """megatron-core's clip_grad_by_total_norm_fp32 without its CUDA type assertion."""
    import torch

    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    attr = "decoupled_grad" if use_decoupled_grad else "grad"
    grads = [getattr(p, attr).detach() for p in parameters if getattr(p, attr, None) is not None]
    clip_coeff = max_norm / (total_norm + 1.0e-6)
    if clip_coeff < 1.0 and grads:
        torch._foreach_mul_(grads, clip_coeff)


def remove_cpu_patches() -> None:
    """Undo apply_cpu_patches (latest first)."""
    while _saved:
        obj, name, original = _saved.pop()
        if original is _ABSENT:
            delattr(obj, name)
        else:
            setattr(obj, name, original)


def apply_no_te_fixes() -> None:
    """megatron-core 0.16 / 0.19 without Transformer-Engine: see the two functions below."""
    _define_missing_te_gemm()
    _mla_without_te()


def _define_missing_te_gemm() -> None:
    """megatron-core 0.16's MoE router tests `te_general_gemm is not None`, but the name is
    only bound when Transformer-Engine imports (moe_utils.py imports it inside a try), so
    every MoE forward without TE raises NameError. None selects its torch.mm path.
    megatron-core 0.19 binds the name itself: there this changes nothing."""
    from megatron.core.transformer.moe import moe_utils

    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None


def _mla_without_te() -> None:
    """Without Transformer-Engine, megatron-core 0.16's extensions module binds TELinear to
    a placeholder object yet multi_latent_attention.py still sets HAVE_TE = True, and
    MLASelfAttention then calls isinstance(..., TELinear), a TypeError. HAVE_TE = False is
    the truth on a machine without TE and only skips TE's FP8/FP4 training path.
    megatron-core 0.19 gets HAVE_TE right (setting it changes nothing there), but then binds its `Linear` (the local replicated
    linear the local spec gives MLA's down-projections, megatron_spec.layer_spec) to None and
    refuses it ("Unsupported linear_q_down_proj"): the name is bound to the class it stands for."""
    from megatron.core.transformer import multi_latent_attention

    if not transformer_engine_usable():
        multi_latent_attention.HAVE_TE = False
        if getattr(multi_latent_attention, "Linear", None) is None:
            from megatron.core.post_training.modelopt.layers import Linear

            multi_latent_attention.Linear = Linear


def _sliding_window_causal_mask_cpu(sq, skv, window_size):
    """megatron-core's get_sliding_window_causal_mask (True = masked), built on CPU."""
    import torch

    m = torch.ones(sq, skv, dtype=torch.bool)
    mu = torch.triu(m, diagonal=skv - sq - window_size[0])
    return ~torch.tril(mu, diagonal=skv - sq + window_size[1])


class _TorchWithCpuZeros(types.ModuleType):
    """`torch` as one megatron module sees it: zeros / tensor(device="cuda") land on CPU."""

    def __init__(self, torch_module):
        super().__init__("torch")
        self._torch = torch_module

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def zeros(self, *args, device=None, **kwargs):
        return self._torch.zeros(*args, device="cpu" if device == "cuda" else device, **kwargs)

    def tensor(self, *args, device=None, **kwargs):
        return self._torch.tensor(*args, device="cpu" if device == "cuda" else device, **kwargs)


@contextlib.contextmanager
def tensor_cuda_is_identity():
    """While building a GPTModel (or importing into one) on CPU: `Tensor.cuda()` returns
    the tensor itself.

    With tied embeddings and PP > 1, megatron-core 0.16's LanguageModule moves the
    last stage's copy of the embedding to CUDA (`weight.data.cuda()`) before the
    all-reduce that makes it equal to the first stage's; on CPU that all-reduce must run
    on the CPU tensor (ModelOpt's importer calls the same method again). Scoped to those
    two calls; nothing else sees the change.
    """
    import torch

    if not cpu_patches_active():
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


CUDA_TYPE_NAMES = {"torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor", "torch.HalfTensor": "torch.cuda.HalfTensor",
                   "torch.FloatTensor": "torch.cuda.FloatTensor"}


@contextlib.contextmanager
def cuda_type_names(params):
    """While building megatron-core's Float16OptimizerWithFloat16Params on CPU: each of
    `params` answers `param.type()` with its CUDA type name.

    That constructor sorts the weights into bf16 / fp16 ones (given an fp32 main copy) and
    fp32 ones by `param.type()`, and refuses any other name ("Wrapped parameters must be one
    of torch.cuda.FloatTensor, ..."); nothing else in it or in its step is CUDA-specific once
    apply_cpu_patches is active. Scoped to the build: the attribute is removed after."""
    params = [p for p in params if p.device.type == "cpu"] if cpu_patches_active() else []
    for param in params:
        real = param.type  # the bound Tensor.type: conversions (param.type(dtype)) keep working
        name = CUDA_TYPE_NAMES.get(real(), real())
        param.type = lambda *args, _name=name, _real=real, **kwargs: _real(*args, **kwargs) if args or kwargs else _name
    try:
        yield
    finally:
        for param in params:
            del param.type


def seed_model_parallel_rng(seed: int) -> None:
    """Seed megatron-core's model-parallel RNG tracker.

    The default tracker forks CUDA RNG states (`torch.cuda.get_rng_state`), which a CPU
    run does not have; the inference tracker keeps the same API without CUDA RNG (dropout
    is 0 in every optmodel model, so nothing depends on those streams).
    """
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    model_parallel_cuda_manual_seed(seed, inference_rng_tracker=cpu_patches_active(), force_reset_rng=True)


def causal_mask(seq_len: int, device):
    """The attention mask megatron gets: None on GPU (its attention is causal by type); on
    CPU an explicit one (True = may NOT attend), because without a mask megatron-core 0.16
    builds its default causal mask on device="cuda" (transformer/utils.py)."""
    import torch

    if torch.device(device).type != "cpu":
        return None
    return torch.triu(torch.ones(seq_len, seq_len, dtype=torch.bool, device=device), diagonal=1)[None, None]
