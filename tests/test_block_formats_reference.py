"""CPU NVFP4 / MXFP8 / MXFP4 fake-quant against an independent computation written here
from the format definitions (issue 20): elements rounded to nearest, ties to even, on the
E2M1 (FP4) or E4M3 (FP8) grid, times the block scale (E4M3 x a per-tensor FP32 scale for
NVFP4's 16-value blocks, E8M0 = a power of two for MX's 32-value blocks). Runs through the
quantizers ModelOpt builds from its own *_DEFAULT_CFG, routed to the CPU backend; equal to
the last bit on random blocks whose magnitudes span many binades."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def round_to_grid(v, mantissa_bits: int, min_exp: int, max_value: float):
    """|v| rounded to nearest-even on a float grid with `mantissa_bits` explicit mantissa bits
    and smallest normal exponent `min_exp` (below it: subnormals of the same spacing),
    saturated at max_value; the sign kept. torch.round rounds half to even."""
    mag = v.abs().double()
    exp = torch.floor(torch.log2(mag)).clamp(min=min_exp)  # log2(0) = -inf -> subnormal range
    step = torch.exp2(exp - mantissa_bits)
    q = (torch.round(mag / step) * step).clamp(max=max_value)
    return (torch.sign(v.double()) * q)


def e2m1(v):  # FP4: 1 sign, 2 exponent (bias 1), 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6
    return round_to_grid(v, 1, 0, 6.0)


def e4m3(v):  # FP8 E4M3FN: 3 mantissa bits, smallest normal 2^-6, max 448
    return round_to_grid(v, 3, -6, 448.0)


def nvfp4_reference(x, amax):
    scale_2 = amax.double() / (6.0 * 448.0)  # per tensor, from the calibrated amax
    blocks = x.double().reshape(-1, 16)
    block_scale = blocks.abs().amax(-1, keepdim=True) / (6.0 * scale_2)
    block_scale = torch.where(block_scale == 0, torch.ones_like(block_scale), block_scale)
    block_scale = e4m3(block_scale.clamp(min=2.0**-9, max=448.0).float().double())
    # ModelOpt divides in float32; the division is exact up to float32 rounding here too.
    scale = (block_scale.float() * scale_2.float()).double()
    scaled = (blocks.float() / scale.float()).double()
    return (e2m1(scaled) * scale).reshape(x.shape)


def mx_reference(x, element, element_max: float):
    blocks = x.double().reshape(-1, 32)
    amax = blocks.abs().amax(-1, keepdim=True)
    # E8M0: the smallest power of two that brings the block's amax within the element range.
    exp = torch.where(amax > 0, torch.ceil(torch.log2(amax / element_max)), torch.full_like(amax, -127.0))
    scale = torch.exp2(exp.clamp(-127, 127))
    return (element((blocks / scale).clamp(-element_max, element_max)) * scale).reshape(x.shape)


def spread(rows: int, cols: int, seed: int):
    """Random values over ~12 binades, blocks of very different scale, one all-zero block."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g) * torch.exp2(torch.randint(-6, 6, (rows, cols), generator=g).float())
    x = x * torch.exp2(torch.randint(-8, 8, (rows, 1), generator=g).float())
    x[0, :32] = 0.0
    return x


def quantized_linear(fmt_name: str, weight):
    import modelopt.torch.quantization as mtq

    from optmodel.quantization import cpu_fakequant

    cpu_fakequant.register()
    cfg = cpu_fakequant.route_to_cpu(getattr(mtq, fmt_name))
    model = torch.nn.Sequential(torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False))
    with torch.no_grad():
        model[0].weight.copy_(weight)
    calib = spread(4, weight.shape[1], seed=7)
    mtq.quantize(model, cfg, forward_loop=lambda m: m(calib))
    return model[0], calib


REFERENCES = {
    "NVFP4_DEFAULT_CFG": lambda x, q: nvfp4_reference(x, q.amax if q.amax is not None else x.abs().amax()),
    "MXFP8_DEFAULT_CFG": lambda x, q: mx_reference(x, e4m3, 448.0),
    "MXFP4_DEFAULT_CFG": lambda x, q: mx_reference(x, e2m1, 6.0),
}


@pytest.mark.parametrize("fmt_name", sorted(REFERENCES))
def test_cpu_block_fake_quant_equals_the_format_definition_bit_for_bit(fmt_name):
    weight = spread(32, 64, seed=1)
    linear, calib = quantized_linear(fmt_name, weight)
    reference = REFERENCES[fmt_name]
    for quantizer, x in ((linear.weight_quantizer, weight), (linear.input_quantizer, spread(8, 64, seed=3))):
        assert quantizer.is_enabled and quantizer.backend is not None
        with torch.no_grad():
            got = quantizer(x)
        want = reference(x, quantizer).float()
        changed = (got != x).float().mean().item()
        assert changed > 0.5, f"{fmt_name}: only {changed:.0%} of the values moved; fake-quant looks like a no-op"
        mismatch = (got != want).nonzero()
        assert mismatch.numel() == 0, (
            f"{fmt_name}: {len(mismatch)} of {x.numel()} values differ from the format definition, first at "
            f"{mismatch[0].tolist()}: got {got[tuple(mismatch[0])].item()!r}, want {want[tuple(mismatch[0])].item()!r}"
        )


def test_nvfp4_ties_round_to_even_on_the_e2m1_grid():
    """Values exactly halfway between two E2M1 points (one 16-value block, scales exactly 1)."""
    from optmodel.quantization import cpu_fakequant

    ties = torch.tensor([[0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.75, -2.5, -5.0, 6.0, 0, 0, 0, 0, 0]])
    # block amax 6 -> block scale 6 / (6 x scale_2) with scale_2 = 6 / (6 x 448): 448, exact in E4M3.
    got = cpu_fakequant._fake_quant_2d(ties, (2, 1), (4, 3), 16, torch.tensor(6.0))
    assert got[0, :10].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -1.0, -2.0, -4.0]
    assert torch.equal(got, e2m1(ties).float())


@pytest.mark.gpu
@pytest.mark.parametrize("fmt_name", sorted(REFERENCES))
def test_cpu_block_fake_quant_equals_modelopt_cuda_kernels_bit_for_bit(fmt_name):
    """The same random blocks through the CPU path and through ModelOpt's own CUDA quantizer
    (the config unrouted, calibrated on the same data): every value equal."""
    import copy

    import modelopt.torch.quantization as mtq

    weight = spread(32, 64, seed=1)
    cpu_linear, calib = quantized_linear(fmt_name, weight)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32, bias=False)).cuda()
    with torch.no_grad():
        model[0].weight.copy_(weight)
    mtq.quantize(model, copy.deepcopy(getattr(mtq, fmt_name)), forward_loop=lambda m: m(calib.cuda()))
    for attr, x in (("weight_quantizer", weight), ("input_quantizer", spread(8, 64, seed=3))):
        cpu_q, cuda_q = getattr(cpu_linear, attr), getattr(model[0], attr)
        assert cuda_q.is_enabled and cuda_q.backend is None, "the CUDA side runs ModelOpt's own kernels"
        with torch.no_grad():
            got, want = cpu_q(x), cuda_q(x.cuda()).cpu()
        assert (want != x).float().mean().item() > 0.5, f"{fmt_name}: the CUDA quantizer left the values alone"
        mismatch = (got != want).nonzero()
        assert mismatch.numel() == 0, (
            f"{fmt_name} {attr}: {len(mismatch)} of {x.numel()} values differ from the CUDA kernel, first at "
            f"{mismatch[0].tolist()}: CPU {got[tuple(mismatch[0])].item()!r}, CUDA {want[tuple(mismatch[0])].item()!r}"
        )
