"""Pure uniform-affine quantization primitives (functions on tensors, no state).

Modelled on torchao's `quant_primitives` [code]: small functions, a granularity table, and one
"blocked 2-D view" through which every granularity is handled. The quantizer definitions follow
reference/quant.md § 1.1 (asymmetric affine with l <= 0 <= u, symmetric with the restricted
integer range, LSQ gradient scale from Esser et al., "Learned Step Size Quantization",
arXiv 1902.08153).

Granularities (`granularity`, with `axis` / `group_size`):

=============  ===========================  ==============================  =====================
granularity    blocks                       qparams shape (blocked view)    typical use
=============  ===========================  ==============================  =====================
``tensor``     one block = whole tensor     (1, 1)                          activations
``channel``    one block per index of       (C, 1), C = x.shape[axis]       weights (axis 0 =
               ``axis``                                                     output channel)
``group``      per channel of axis 0, then  (C * n_groups, 1)               low-bit weights
               runs of ``group_size``                                       (GPTQ/AWQ style)
               consecutive elements of the
               flattened rest
=============  ===========================  ==============================  =====================

Integer ranges:

* asymmetric: q in [0, 2^b - 1]; step = (u - l) / (2^b - 1); zero point = clamp(round(-l/step)).
* symmetric: q in [-(2^(b-1) - 1), 2^(b-1) - 1] (restricted range, so the grid is symmetric
  around 0 and the zero point is 0); step = max(|l|, |u|) / (2^(b-1) - 1). [our choice, as in
  the brief; the SAM/CacheQuant/QDrop configs use asymmetric quantizers throughout]

The step is clamped to >= 1e-8 so an all-zero block quantizes to zero instead of dividing by 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.errors import ConfigError

GRANULARITIES = ("tensor", "channel", "group")
MIN_STEP = 1e-8


@dataclass(frozen=True)
class Granularity:
    """Where the quantization parameters live (see the module table)."""

    kind: str = "tensor"
    axis: int = 0
    group_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in GRANULARITIES:
            raise ConfigError(
                f"granularity must be one of {GRANULARITIES}, got {self.kind!r}. "
                "Use 'tensor' for activations and 'channel' for weights."
            )
        if self.kind == "group" and (self.group_size is None or self.group_size < 1):
            raise ConfigError(
                f"granularity 'group' needs a positive group_size, got {self.group_size!r}. "
                "Pass e.g. group_size=32."
            )


PER_TENSOR = Granularity("tensor")
PER_CHANNEL = Granularity("channel", axis=0)


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """The integer range [qmin, qmax] of a `bits`-bit quantizer."""
    if bits < 1 or bits > 16:
        raise ConfigError(f"bits must be in 1..16, got {bits}.")
    if symmetric:
        if bits < 2:
            raise ConfigError("A symmetric quantizer needs at least 2 bits (1 bit gives an empty grid).")
        half = 2 ** (bits - 1) - 1
        return -half, half
    return 0, 2**bits - 1


def to_blocks(x: torch.Tensor, gran: Granularity) -> torch.Tensor:
    """A 2-D view (n_blocks, block_elems) of `x`; statistics reduce over dim 1."""
    if gran.kind == "tensor":
        return x.reshape(1, -1)
    moved = x.movedim(gran.axis, 0) if gran.axis != 0 else x
    rows = moved.reshape(moved.shape[0], -1)
    if gran.kind == "channel":
        return rows
    if rows.shape[1] % gran.group_size:
        raise ConfigError(
            f"group_size {gran.group_size} does not divide the {rows.shape[1]} elements per channel of "
            f"a tensor of shape {tuple(x.shape)}; choose a divisor."
        )
    return rows.reshape(-1, gran.group_size)


def from_blocks(blocks: torch.Tensor, like: torch.Tensor, gran: Granularity) -> torch.Tensor:
    """Inverse of `to_blocks` for a tensor shaped like `like`."""
    if gran.kind == "tensor":
        return blocks.reshape(like.shape)
    if gran.axis == 0:
        return blocks.reshape(like.shape)
    moved_shape = like.movedim(gran.axis, 0).shape
    return blocks.reshape(moved_shape).movedim(0, gran.axis)


def choose_qparams(
    lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(step, zero_point) from a range [lo, hi] (any broadcastable shape); zero point is a float tensor
    holding integers so it can be stored beside the step."""
    qmin, qmax = qrange(bits, symmetric)
    lo = torch.minimum(lo, torch.zeros_like(lo))
    hi = torch.maximum(hi, torch.zeros_like(hi))
    if symmetric:
        step = torch.maximum(lo.abs(), hi.abs()) / qmax
        return step.clamp_min(MIN_STEP), torch.zeros_like(step)
    step = ((hi - lo) / (qmax - qmin)).clamp_min(MIN_STEP)
    zero = torch.clamp(torch.round(-lo / step), qmin, qmax)
    return step, zero


def quantize(x: torch.Tensor, step: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes q = clamp(round(x / step) + zero, qmin, qmax) (as a float tensor)."""
    return torch.clamp(torch.round(x / step) + zero, qmin, qmax)


def dequantize(q: torch.Tensor, step: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (q - zero) * step


def fake_quantize(
    x: torch.Tensor, step: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """Quantize then dequantize (no gradient tricks; use `fake_quantize_ste`/`fake_quantize_lsq` to train)."""
    return dequantize(quantize(x, step, zero, qmin, qmax), step, zero)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() in the forward pass, identity in the backward pass (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass, gradient multiplied by `scale` in the backward pass."""
    return x * scale + (x - x * scale).detach()


def fake_quantize_ste(
    x: torch.Tensor, step: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """Fake quantization with an STE on round: d/dx = 1 inside the range, 0 where clamped.

    The clamp acts on the continuous value x/step + zero before rounding, as in LSQ's
    round(clip(v/s, -Qn, Qp)); the forward value is the same as clamping after rounding because the
    bounds are integers, but the gradient boundary is then the paper's."""
    return (round_ste(torch.clamp(x / step + zero, qmin, qmax)) - zero) * step


def lsq_grad_scale(elems_per_step: int, qmax: int) -> float:
    """LSQ's g = 1 / sqrt(N * Q_max) (Esser et al. 2019, § 2.2)."""
    return 1.0 / float(max(elems_per_step, 1) * max(qmax, 1)) ** 0.5


def fake_quantize_lsq(
    x: torch.Tensor, step: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int, g: float
) -> torch.Tensor:
    """LSQ fake quantization: the step receives gradient g * (round(x/s) - x/s) inside the range and
    g * (qmin - z) / g * (qmax - z) where clamped; x receives the STE gradient. The zero point is
    held fixed (PyTorch's learnable fake-quant also learns it; we learn the step only) [our choice]."""
    step = grad_scale(step, g)
    return (round_ste(torch.clamp(x / step + zero, qmin, qmax)) - zero) * step


def fake_quantize_blocked(
    x: torch.Tensor,
    step: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    symmetric: bool,
    gran: Granularity,
    mode: str = "plain",
    g: float = 1.0,
) -> torch.Tensor:
    """Fake-quantize `x` with (step, zero) of shape (n_blocks, 1) under `gran`.

    mode: 'plain' (no gradient tricks), 'ste' (STE on round), 'lsq' (STE + LSQ step gradient).
    """
    qmin, qmax = qrange(bits, symmetric)
    blocks = to_blocks(x, gran)
    if mode == "plain":
        out = fake_quantize(blocks, step, zero, qmin, qmax)
    elif mode == "ste":
        out = fake_quantize_ste(blocks, step, zero, qmin, qmax)
    elif mode == "lsq":
        out = fake_quantize_lsq(blocks, step, zero, qmin, qmax, g)
    else:
        raise ConfigError(f"fake-quant mode must be 'plain', 'ste' or 'lsq', got {mode!r}.")
    return from_blocks(out, x, gran)
