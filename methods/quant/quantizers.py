"""Quantizer modules: uniform (observer / LSQ / QDrop), AdaRound rounding, log2 post-softmax, and the
timestep-indexed quantizer.

Sources:
* LSQ: Esser et al., "Learned Step Size Quantization", arXiv 1902.08153 — step gradient scaled by
  g = 1/sqrt(N * Qmax), STE on round [paper]; used as in PTQ4SAM/SAQ-SAM's fake quantizers [code].
* AdaRound: Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization",
  arXiv 2004.10568 — rectified sigmoid h(V) = clamp(sigmoid(V)(zeta - gamma) + gamma, 0, 1),
  zeta = 1.1, gamma = -0.1, regulariser sum(1 - |2h - 1|^beta) [paper]; V initialised so that
  h(V) equals the fractional part of W/step, hardening h = [V >= 0] [code: BRECQ/QDrop].
* QDrop: Wei et al., "QDrop: Randomly Dropping Quantization for Extremely Low-bit PTQ",
  arXiv 2203.05740 — x_out = where(rand < p, Q(x), x) element-wise [code: `wimh966/QDrop`].
  `drop_prob` must be 1 at evaluation (`methods.quant.hygiene.check_ready_for_eval`).
* Log2 with adaptive base: PTQ4SAM (Lv et al., arXiv 2405.03144) AGQ — q = round(-tau log2(x/s)),
  q in [0, 2^b - 1], codes >= 2^b dropped to 0, x^ = s 2^(-q/tau), tau in {1, 2, 4}; s by
  golden-section search on ||(x^ - x) V||^2 [code: `LogAvgMSEFastObserver`]. tau = 2 is RepQ-ViT's
  log-sqrt(2) quantizer (Li et al., arXiv 2212.08254); `shift_dequant` is its log2 re-parameterised
  inference form [code: `zkkli/RepQ-ViT`]. The log2 scale is not learned [our choice].
* Timestep-indexed quantizer: one (step, zero) per diffusion step, each sample quantized with its
  own step's entry (CacheQuant arXiv 2503.01323 / DilateQuant arXiv 2409.14307 TPQ) [paper];
  min-max calibration per step [our choice].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from methods.errors import ConfigError
from methods.quant.observers import Observer
from methods.quant.primitives import (
    PER_TENSOR,
    Granularity,
    choose_qparams,
    fake_quantize_blocked,
    from_blocks,
    grad_scale,
    lsq_grad_scale,
    qrange,
    round_ste,
    to_blocks,
)

ZETA, GAMMA = 1.1, -0.1


class QuantizerBase(nn.Module):
    """Common switches: `enabled` (fake-quant on), `observing` (collect stats), `drop_prob` (QDrop)."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.observing = False
        self.drop_prob = 1.0
        self.calibrated = False
        # (unit input, mask) while a reconstruction unit runs; see `mix` and `recon.shared_input_mask`
        self.input_mix: tuple[torch.Tensor, torch.Tensor] | None = None

    def mix(self, x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
        """QDrop: each element quantized with probability `drop_prob`, else passed through [code].

        A quantizer fed the reconstruction unit's input itself reuses the mask that mixed that input
        (quantized-model input where True, FP-model input where False), so each element it emits is
        Q(x_q) or x_fp, as in the official code where the previous block already quantized x_q;
        drawing a fresh mask here would give Q(x_q), x_q, Q(x_fp) and x_fp about 25 % each.
        """
        if self.drop_prob >= 1.0:
            return xq
        shared = self.input_mix
        if shared is not None and shared[0] is x:
            return torch.where(shared[1], xq, x)
        return torch.where(torch.rand_like(x) < self.drop_prob, xq, x)

    def extra_repr(self) -> str:
        return f"enabled={self.enabled}, drop_prob={self.drop_prob}, calibrated={self.calibrated}"


class UniformQuantizer(QuantizerBase):
    """Uniform affine fake quantizer with an observer, optional LSQ step learning and QDrop mixing."""

    def __init__(
        self,
        bits: int,
        symmetric: bool = False,
        granularity: Granularity = PER_TENSOR,
        observer: str = "minmax",
        p: float = 2.0,
    ) -> None:
        super().__init__()
        qrange(bits, symmetric)  # validates
        self.bits, self.symmetric, self.granularity = bits, symmetric, granularity
        self.observer_kind, self.p = observer, p
        self.step = nn.Parameter(torch.ones(1, 1), requires_grad=False)
        self.register_buffer("zero", torch.zeros(1, 1))
        self.observer: Observer | None = None

    @property
    def qmin(self) -> int:
        return qrange(self.bits, self.symmetric)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.bits, self.symmetric)[1]

    def start_observing(self) -> None:
        self.observer = Observer(self.observer_kind, self.bits, self.symmetric, p=self.p)
        self.observing = True

    def finish_observing(self) -> None:
        if self.observer is not None and self.observer.has_data:
            self.set_range(*self.observer.range())
        self.observer, self.observing = None, False

    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        step, zero = choose_qparams(lo.float(), hi.float(), self.bits, self.symmetric)
        self.set_qparams(step, zero)

    def set_qparams(self, step: torch.Tensor, zero: torch.Tensor) -> None:
        self.step = nn.Parameter(step.detach().clone().reshape(-1, 1), requires_grad=False)
        self.zero = zero.detach().clone().reshape(-1, 1)
        self.calibrated = True

    def learn_step(self, on: bool = True) -> None:
        self.step.requires_grad_(on)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing and self.observer is not None:
            self.observer.update(to_blocks(x, self.granularity))
        if not self.enabled or not self.calibrated:
            return x
        mode = "lsq" if self.step.requires_grad else "ste"
        elems = to_blocks(x, self.granularity).shape[1]
        g = lsq_grad_scale(elems, self.qmax)
        xq = fake_quantize_blocked(
            x, self.step, self.zero, self.bits, self.symmetric, self.granularity, mode, g
        )
        return self.mix(x, xq)

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, sym={self.symmetric}, gran={self.granularity.kind}, " + super().extra_repr()
        )


class AdaRound(nn.Module):
    """Learned up/down rounding of a weight tensor on the grid of a `UniformQuantizer`."""

    def __init__(self, weight: torch.Tensor, quantizer: UniformQuantizer) -> None:
        super().__init__()
        if not quantizer.calibrated:
            raise ConfigError("AdaRound needs a calibrated weight quantizer (run the weight observer first).")
        gran = quantizer.granularity
        scaled = to_blocks(weight.detach(), gran) / quantizer.step.detach()
        frac = scaled - torch.floor(scaled)
        # h(V) = frac  <=>  sigmoid(V) = (frac - gamma) / (zeta - gamma)
        self.alpha = nn.Parameter(-torch.log((ZETA - GAMMA) / (frac - GAMMA) - 1.0))
        self.soft = True

    def h(self) -> torch.Tensor:
        if not self.soft:
            return (self.alpha >= 0).to(self.alpha.dtype)
        return torch.clamp(torch.sigmoid(self.alpha) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def forward(self, weight: torch.Tensor, q: UniformQuantizer) -> torch.Tensor:
        blocks = to_blocks(weight, q.granularity)
        step = q.step.detach()
        ints = torch.floor(blocks / step) + self.h() + q.zero
        out = (torch.clamp(ints, q.qmin, q.qmax) - q.zero) * step
        return from_blocks(out, weight, q.granularity)

    def regularizer(self, beta: float) -> torch.Tensor:
        return (1.0 - (2.0 * self.h() - 1.0).abs().pow(beta)).sum()

    @torch.no_grad()
    def undecided(self) -> tuple[int, int]:
        """(variables with 0 < h(V) < 1, all variables): h reaches exactly 0 or 1 once the rectified
        sigmoid saturates, so a variable strictly inside is one the optimisation has not decided
        and hardening rounds by the sign of V alone (the convergence measure of issue 13)."""
        h = torch.clamp(torch.sigmoid(self.alpha) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)
        return int(((h > 0) & (h < 1)).sum()), h.numel()

    def harden(self) -> None:
        self.soft = False
        self.alpha.requires_grad_(False)


def anneal_beta(
    it: int, iters: int, warmup: float = 0.2, start: float = 20.0, end: float = 2.0
) -> float | None:
    """AdaRound's beta schedule: None (no regulariser) during warm-up, then linear start -> end."""
    w = int(warmup * iters)
    if it < w:
        return None
    frac = (it - w) / max(iters - w, 1)
    return end + (start - end) * (1.0 - frac)


def log2_fake_quant(x: torch.Tensor, s: float, tau: int, bits: int) -> torch.Tensor:
    """x^ = s 2^(-q/tau), q = round(-tau log2(x/s)) in [0, 2^b - 1]; codes beyond the grid -> 0."""
    qmax = 2**bits - 1
    q = torch.round(-tau * torch.log2(x.clamp_min(0) / s))
    q = torch.clamp(q, min=0)  # values above s saturate at s (q = 0)
    out = s * torch.pow(2.0, -q / tau)
    return torch.where(q > qmax, torch.zeros_like(out), out)


def shift_dequant(x: torch.Tensor, s: float, bits: int) -> torch.Tensor:
    """RepQ-ViT's inference form of the log-sqrt(2) quantizer: integer shift ceil(q/2) and a constant
    sqrt(2) multiplier for odd codes; equals `log2_fake_quant(x, s, 2, bits)`."""
    qmax = 2**bits - 1
    q = torch.clamp(torch.round(-2 * torch.log2(x.clamp_min(0) / s)), min=0)
    odd = torch.remainder(q, 2)
    out = s * torch.pow(2.0, -torch.ceil(q / 2)) * (1.0 + odd * (math.sqrt(2.0) - 1.0))
    return torch.where(q > qmax, torch.zeros_like(out), out)


def golden_section(f, lo: float, hi: float, iters: int = 30) -> float:
    """Minimise a unimodal 1-D function on [lo, hi]."""
    r = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - r * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + r * (b - a)
            fd = f(d)
    return (a + b) / 2.0


class Log2Quantizer(QuantizerBase):
    """Post-softmax log2 quantizer with adaptive base tau (PTQ4SAM AGQ; tau=(2,) is RepQ-ViT's log-sqrt2).

    Calibration: `observe(x, v)` stores attention maps and the value matrices they multiply; the scale
    for each tau is found by golden-section search of ||(x^ - x) @ v||^2 over s in
    [max(x)/8, 2 max(x)] [search interval: our choice]; the tau with the lowest error is kept.
    """

    def __init__(self, bits: int, taus: tuple[int, ...] = (1, 2, 4), max_batches: int = 4) -> None:
        super().__init__()
        if not taus or any(t not in (1, 2, 4) for t in taus):
            raise ConfigError(f"taus must be a non-empty subset of (1, 2, 4), got {taus!r}.")
        self.bits, self.taus, self.max_batches = bits, tuple(taus), max_batches
        self.register_buffer("scale", torch.ones(()))
        self.tau = taus[0]
        self.shift_form = False
        self._seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def start_observing(self) -> None:
        self._seen, self.observing = [], True

    def observe(self, x: torch.Tensor, v: torch.Tensor | None) -> None:
        if self.observing and len(self._seen) < self.max_batches:
            self._seen.append((x.detach(), None if v is None else v.detach()))

    def error(self, s: float, tau: int) -> float:
        total = 0.0
        for x, v in self._seen:
            d = log2_fake_quant(x, s, tau, self.bits) - x
            total += float(((d @ v) if v is not None else d).pow(2).sum())
        return total

    def finish_observing(self) -> None:
        if self._seen:
            top = max(float(x.max()) for x, _ in self._seen)
            top = max(top, 1e-8)
            best = None
            for tau in self.taus:
                s = golden_section(lambda s, t=tau: self.error(s, t), top / 8.0, top * 2.0)
                err = self.error(s, tau)
                if best is None or err < best[0]:
                    best = (err, s, tau)
            self.scale = torch.tensor(best[1])
            self.tau = best[2]
            self.calibrated = True
        self._seen, self.observing = [], False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or not self.calibrated:
            return x
        s = float(self.scale)
        if self.shift_form and self.tau == 2:
            xq = shift_dequant(x, s, self.bits)
        else:
            xq = log2_fake_quant(x, s, self.tau, self.bits)
        xq = x + (xq - x).detach()  # STE so gradients reach earlier layers during reconstruction
        return self.mix(x, xq)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, tau={self.tau}, " + super().extra_repr()


class TimestepQuantizer(QuantizerBase):
    """Per-tensor asymmetric/symmetric fake quantizer with one (step, zero) per timestep.

    `forward(x, t)` takes `t` of shape (B,) (long); sample i uses entry t[i], so a mixed-timestep
    batch trains every entry in parallel and equals running each sample on its own.

    DilateQuant's TPQ additions (arXiv 2409.14307) [paper]: `heads > 1` keeps one entry per
    (timestep, head), the head axis being `head_dim` of x (attention inputs (B, H, N, d)), and
    `learn(zero=True)` also trains the zero points, as a continuous offset added to the integer
    zero point (LSQ+-style; `harden_zero` rounds it back onto the integer grid) [inferred].
    """

    def __init__(self, bits: int, num_steps: int, symmetric: bool = False, heads: int = 1,
                 head_dim: int = 1) -> None:
        super().__init__()
        if num_steps < 1:
            raise ConfigError(f"num_steps must be >= 1, got {num_steps}.")
        if heads < 1 or head_dim < 1:
            raise ConfigError(f"heads and head_dim must be >= 1, got heads={heads}, head_dim={head_dim}.")
        qrange(bits, symmetric)
        self.bits, self.symmetric, self.num_steps = bits, symmetric, num_steps
        self.heads, self.head_dim = heads, head_dim
        shape = (num_steps,) if heads == 1 else (num_steps, heads)
        self.step = nn.Parameter(torch.ones(shape), requires_grad=False)
        self.register_buffer("zero", torch.zeros(shape))
        self.register_buffer("lo", torch.full(shape, math.inf))
        self.register_buffer("hi", torch.full(shape, -math.inf))
        self.register_parameter("zero_offset", None)  # created by learn(zero=True)

    def start_observing(self) -> None:
        self.lo.fill_(math.inf)
        self.hi.fill_(-math.inf)
        self.observing = True

    def finish_observing(self) -> None:
        seen = torch.isfinite(self.lo)
        lo = torch.where(seen, self.lo, torch.zeros_like(self.lo))
        hi = torch.where(seen, self.hi, torch.zeros_like(self.hi))
        step, zero = choose_qparams(lo, hi, self.bits, self.symmetric)
        self.step = nn.Parameter(step, requires_grad=False)
        self.zero = zero
        self.zero_offset = None
        self.calibrated, self.observing = True, False

    def learn(self, step: bool = True, zero: bool = False) -> list[nn.Parameter]:
        """Switch training of the step (LSQ) and of the zero points on or off; returns the trained ones."""
        self.step.requires_grad_(step)
        if zero and self.zero_offset is None:
            self.zero_offset = nn.Parameter(torch.zeros_like(self.zero))
        if self.zero_offset is not None:
            self.zero_offset.requires_grad_(zero)
        return [p for p in (self.step, self.zero_offset) if p is not None and p.requires_grad]

    @torch.no_grad()
    def harden_zero(self) -> None:
        """Fold the learned zero-point offset into integer zero points (deployable) and drop it."""
        if self.zero_offset is not None:
            qmin, qmax = qrange(self.bits, self.symmetric)
            self.zero = torch.clamp(torch.round(self.zero + self.zero_offset), qmin, qmax)
            self.zero_offset = None

    def _check_t(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.long, device=x.device).reshape(-1)
        if t.numel() == 1 and x.shape[0] != 1:
            t = t.expand(x.shape[0])
        if t.numel() != x.shape[0] or int(t.min()) < 0 or int(t.max()) >= self.num_steps:
            raise ConfigError(
                f"timestep indices must be one per sample in [0, {self.num_steps}), got shape "
                f"{tuple(t.shape)} with range [{int(t.min())}, {int(t.max())}] for batch {x.shape[0]}."
            )
        if self.heads > 1 and (x.dim() <= self.head_dim or x.shape[self.head_dim] != self.heads):
            raise ConfigError(
                f"this quantizer keeps {self.heads} heads on dim {self.head_dim}; got an input of shape "
                f"{tuple(x.shape)}. Build it with the input's head count and head axis."
            )
        return t

    def _per_entry(self, x: torch.Tensor) -> torch.Tensor:
        """x as (B, elems) for one head, (B, H, elems) for several."""
        if self.heads == 1:
            return x.detach().reshape(x.shape[0], -1)
        return x.detach().movedim(self.head_dim, 1).reshape(x.shape[0], self.heads, -1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = self._check_t(x, t)
        if self.observing:
            flat = self._per_entry(x)
            idx = t if self.heads == 1 else t[:, None].expand(-1, self.heads)
            self.lo.scatter_reduce_(0, idx, flat.amin(-1), reduce="amin")
            self.hi.scatter_reduce_(0, idx, flat.amax(-1), reduce="amax")
        if not self.enabled or not self.calibrated:
            return x
        qmin, qmax = qrange(self.bits, self.symmetric)
        if self.heads == 1:
            shape = (-1,) + (1,) * (x.dim() - 1)
        else:
            shape = [1] * x.dim()
            shape[0], shape[self.head_dim] = x.shape[0], self.heads
        step = self.step
        if step.requires_grad:
            step = grad_scale(step, lsq_grad_scale(x[0].numel() // self.heads, qmax))
        zero = self.zero[t] if self.zero_offset is None else self.zero[t] + self.zero_offset[t]
        s, z = step[t].reshape(shape), zero.reshape(shape)
        xq = (round_ste(torch.clamp(x / s + z, qmin, qmax)) - z) * s
        return self.mix(x, xq)
