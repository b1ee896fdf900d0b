"""CacheQuant: joint DeepCache-style feature caching and PTQ for diffusion U-Nets, training-free.

Paper: Liu, Li, Gu et al., "CacheQuant: Comprehensively Accelerated Diffusion Models", arXiv
2503.01323 (CVPR 2025); official code `BienLuky/CacheQuant` (built on EDA-DM). Brief:
reference/quant.md § 3.

* [code] DPS (`quant/utils.py::Fisher.feature_to_interval_seq_optimal`): record the cached feature
  F_t of every step on FP trajectories; split the T steps into K = ceil(T/N) consecutive groups with
  lengths in [ceil(N/2), 2N]; a group [j, n) refreshes at j and costs C(j, n) = sum_{i=j}^{n-1}
  ||F_i - F_j||_1; dynamic programme D[n][k] = min_j D[j][k-1] + C(j, n), backtracked. `brute_force`
  enumerates every admissible partition (tests check optimality).
* [paper, unverified in code] Quantization-aware DPS (`schedule="qdps"`): the same programme with
  C(j, n) = sum_i ||F^q_j - F_i||_1, where F^q_j is the feature of the *quantized* model at step j
  (per-timestep calibrated on a refresh-every-step trajectory) — reusing a quantized cache against the
  FP truth. Our instantiation [inferred]; the released DPS uses FP features only.
* [code] Cache error correction (DEC, `error_dec/*/..._dec.py --error cache`): for each cached step t
  and channel c, closed-form least squares of the true feature Y = F_t on the reused cache
  X = F_r(t): a = Cov(X_c, Y_c)/Var(X_c), b = mean(Y_c) - a mean(X_c), over batch and positions;
  inference uses a * cache + b. Fitted on the FP model's cached trajectory, one step at a time (each
  step's X comes from a trajectory already using the earlier corrections) [inferred order].
* [code] Timestep-aware calibration with one activation (step, zero) per timestep per layer
  (`num_timesteps = T`), percentile/MSE search (`set_quantize_params.py`); weights asymmetric per
  channel with the MSE grid; Q-Diffusion split of the skip concatenation (`--split`). The per-step
  parameters live in the toolbox's `TimestepQuantizer`, indexed by a shared step clock [inferred].
  Calibration trajectory: the cached sampler with quantized weights and FP activations [inferred].
* [code] Quantization error correction (`--error quant`): for the layers that consume the
  (corrected) cache — the 3x3 `conv1` after GroupNorm+SiLU and the 1x1 `conv_shortcut` of the cached
  up-block's first ResBlock — per step t and output channel, regress the FP output W X on the
  quantized output W_q Q(X) with the same closed form; applied at every step [inferred: the code
  fits per step; which steps are corrected is our reading]. With `cache_point` at a ResBlock the
  consumers are that ResBlock's `conv1` and `conv_shortcut`; at an attention point (`up.J.attn.K`)
  the cache feeds an attention, not a convolution, and nothing is corrected [ours].
* [code] `cache_point` (a `methods.unet_blocks` address such as "up.2.res.1") caches at one ResBlock
  as the official DDPM/SD code does; empty (the default) keeps `branch` (a whole up-block input).
* [ours] `quantizer="dilatequant"` composes the two lab methods (no published code does): the
  quantized U-Net inside the cached sampler is DilateQuant's (`methods.dilatequant`: WD + TPQ + BKD,
  `dq_iters` iterations per unit on up to `dq_calib` (x_t, t) samples of the FP trajectories of the
  calibration noise), trained once and shared by every schedule; its per-step quantizers follow the
  sampler's step (its `StepIndex` replaces the clock), and cache DEC, quantization DEC and
  quantization-aware DPS apply to it as to the default quantizer ('qdiffusion': the per-timestep PTQ
  above). Unconditional UNet2DModel only, bits w2..8 a2..8.
* [inferred] Sizes (calibration/DPS/DEC trajectories) are arguments; the paper uses 8 trajectories for
  DPS and 64 for calibration at T = 250; the DDPM-CIFAR code 128 (DPS) and 512 (DEC).
* Switches, each a field so it can be ablated; `preset_config("official")` sets them all to the
  official DDPM-CIFAR path (reference/quant.md § 3, `PRESETS`), the defaults keep our variants:
  - `dec_fit`: 'cached' [ours] fits the cache DEC along the cached trajectory (above); 'refresh'
    [code] regresses F_t on F_r(t) taken from one FP run that refreshes every step
    (`fit_cache_correction_refresh`, `dec_samples` trajectories).
  - `act_observer` / `act_p` / `act_chunk`: 'percentile' [ours, the brief] vs 'mse' with p = 2.4
    [code]; `act_chunk` > 0 takes one range per chunk of that many samples (dim 0; for attention
    products that is sample x head rows [inferred]) and running-averages them 0.9/0.1 [code].
  - `dec_estimator`: the cache DEC's per-channel slope, 'lstsq' (Cov/Var, the paper's regression) or
    'moments' [ours] (sign(Cov) sd(y)/sd(x)): least squares shrinks the corrected feature towards its
    mean, by rho^2 in variance, which lowers per-sample MSE but can narrow the sample distribution
    (raise FD); moment matching keeps each channel's mean and variance. Quantization DEC stays
    least squares.
  - `quant_dec_on`: 'consumers' [ours] corrects conv1 and the whole shortcut output;
    'shortcut_half' [code] only the cached half of the 1x1 shortcut (`HalfCorrectedShortcut`, the
    official scale folding, exactly).
  - `attn_quant`: the attention q.k and softmax.v products quantized with per-step quantizers
    (`methods.quant.diffusers_attention`) [code]; off by default [ours].
  - `spacing`: 'uniform' (the scheduler's own, [ours] for DDPM) or 'quad' (ermongroup/ddim
    `skip_type='quad'`, the official CIFAR run; `methods.ddim_spacing`) [code]. The whole sampler
    (FP reference included, when the caller uses the same config) runs on that spacing.
  First and last layers stay at 8 bits in both (`QuantConfig.first_last_bits`) [code].
"""
from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from methods.ddim_spacing import build_spaced_scheduler
from methods.deepcache import SCHEDULES, DeepCacheUNet, cache_schedule, sample_loop
from methods.dilatequant import UNET_QAT_BITS, DilateQuantConfig, prepare_dilatequant
from methods.errors import ConfigError, did_you_mean
from methods.qdiffusion import SplitActQuant, apply_split, find_concat_splits
from methods.quant import QuantConfig, check_ready_for_eval, finalize_for_eval, quantize_
from methods.quant.bits import FAKE_QUANT, canonical_bits, parse_bits
from methods.quant.modules import QuantConv2d, _QuantWeightLayer
from methods.quant.observers import Observer
from methods.quant.primitives import choose_qparams
from methods.quant.quantizers import QuantizerBase, TimestepQuantizer
from methods.quant.unet_units import TemporalActQuant, fp_trajectories
from methods.unet_blocks import ADDRESS

CQ_SCHEDULES = (*SCHEDULES, "dps", "qdps")
#: Who quantizes the U-Net inside the cached sampler: CacheQuant's own per-timestep PTQ
#: ('qdiffusion', the default) or DilateQuant's WD + TPQ + BKD model ('dilatequant').
QUANTIZERS = ("qdiffusion", "dilatequant")
#: The bits CacheQuant takes (`methods.quant.bits`): 'fp' or w2..16 a2..16, no kv, no overrides.
CQ_BITS = {**FAKE_QUANT, "who": "CacheQuant"}
DEC_FITS = ("cached", "refresh")
DEC_ESTIMATORS = ("lstsq", "moments")
QUANT_DEC_ON = ("consumers", "shortcut_half")
SPACINGS = ("uniform", "quad")
#: Named presets: field values that `preset_config` starts from (explicit fields override them).
#: 'official' = the official DDPM-CIFAR path (reference/quant.md § 3, "read later [code]"):
#: 128 DPS / 512 DEC trajectories, cache DEC on an always-refresh FP run, MSE p = 2.4 activation
#: ranges running-averaged 0.9/0.1 over chunks of 32 samples, quantized attention products,
#: quantization DEC on the cached half of the 1x1 shortcut only, quadratic step spacing. First and
#: last layers are at 8 bits in both presets (`QuantConfig.first_last_bits`).
#: [inferred] 64 calibration trajectories observed in chunks of 32 stand in for the official "32
#: samples per step (64 at refresh steps) drawn from 512 trajectories".
PRESETS: dict[str, dict[str, Any]] = {
    "ours": {},
    "official": {"dps_samples": 128, "dec_samples": 512, "calib_samples": 64, "dec_fit": "refresh",
                 "act_observer": "mse", "act_p": 2.4, "act_chunk": 32, "attn_quant": True,
                 "quant_dec_on": "shortcut_half", "spacing": "quad"},
}


# --------------------------------------------------------------------------------------- DPS
def group_bounds(interval: int) -> tuple[int, int]:
    """Admissible group lengths [ceil(N/2), 2N] [code]."""
    return math.ceil(interval / 2), 2 * interval


def distance_table(feats: list[torch.Tensor], ref: list[torch.Tensor] | None = None) -> torch.Tensor:
    """d[j, i] = mean over samples of ||F_i - R_j||_1 (R = feats for FP DPS), for j <= i."""
    ref = feats if ref is None else ref
    T = len(feats)
    d = torch.zeros(T, T, dtype=torch.float64)
    for j in range(T):
        rj = ref[j].double()
        for i in range(j, T):
            d[j, i] = (feats[i].double() - rj).abs().flatten(1).sum(1).mean()
    return d


def group_cost(d: torch.Tensor) -> torch.Tensor:
    """C[j, n] = sum_{i=j}^{n-1} d[j, i] for 0 <= j < n <= T (inf elsewhere)."""
    T = d.shape[0]
    c = torch.full((T + 1, T + 1), math.inf, dtype=torch.float64)
    for j in range(T):
        c[j, j + 1:] = torch.cumsum(d[j, j:], 0)
    return c


def dps(cost: torch.Tensor, steps: int, groups: int, lo: int, hi: int) -> tuple[list[int], float]:
    """Minimum-cost partition of [0, steps) into `groups` runs of length in [lo, hi]; (starts, cost)."""
    if not lo * groups <= steps <= hi * groups:
        raise ConfigError(
            f"cannot split {steps} steps into {groups} groups of length {lo}..{hi}; choose another cache "
            "interval or number of steps."
        )
    D = torch.full((steps + 1, groups + 1), math.inf, dtype=torch.float64)
    arg = torch.full((steps + 1, groups + 1), -1, dtype=torch.long)
    D[0, 0] = 0.0
    for k in range(1, groups + 1):
        for n in range(k * lo, min(k * hi, steps) + 1):
            for j in range(max(0, n - hi), n - lo + 1):
                v = D[j, k - 1] + cost[j, n]
                if v < D[n, k]:
                    D[n, k], arg[n, k] = v, j
    starts, n = [], steps
    for k in range(groups, 0, -1):
        j = int(arg[n, k])
        starts.append(j)
        n = j
    return sorted(starts), float(D[steps, groups])


def brute_force(cost: torch.Tensor, steps: int, groups: int, lo: int, hi: int) -> tuple[list[int], float]:
    """Exhaustive search over all compositions (test oracle for `dps`)."""
    best: tuple[list[int], float] = ([], math.inf)
    for lengths in itertools.product(range(lo, hi + 1), repeat=groups):
        if sum(lengths) != steps:
            continue
        starts = [sum(lengths[:k]) for k in range(groups)]
        total = sum(float(cost[s, s + n]) for s, n in zip(starts, lengths, strict=True))
        if total < best[1]:
            best = (starts, total)
    if not best[0]:
        raise ConfigError(f"no partition of {steps} steps into {groups} groups of length {lo}..{hi}.")
    return best


def schedule_cost(cost: torch.Tensor, refresh: list[int], steps: int) -> float:
    """The DP objective of any schedule (to compare uniform / non-uniform with DPS)."""
    bounds = [*sorted(refresh), steps]
    return float(sum(cost[a, b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)))


def dps_schedule(feats: list[torch.Tensor], interval: int,
                 ref: list[torch.Tensor] | None = None) -> list[int]:
    steps = len(feats)
    groups = math.ceil(steps / interval)
    if groups <= 1 or interval <= 1:
        return list(range(0, steps, max(interval, 1)))
    lo, hi = group_bounds(interval)
    return dps(group_cost(distance_table(feats, ref)), steps, groups, lo, hi)[0]


@torch.no_grad()
def record_features(dc: DeepCacheUNet, scheduler: Any, noise: torch.Tensor, steps: int,
                    refresh: list[int] | None = None, cond: dict | None = None,
                    clock: Any = None) -> list[torch.Tensor]:
    """The feature entering the cached up-block at every step (refresh at every step by default)."""
    feats: list[torch.Tensor] = []
    on_step = (lambda i, t: clock.set(i)) if clock is not None else None
    sample_loop(dc, scheduler, noise, steps, refresh or list(range(steps)), cond=cond, on_step=on_step,
                record=lambda i, t, x, f, r: feats.append(f.clone()))
    return feats


# --------------------------------------------------------------------------------------- regressions
def channel_affine(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12,
                   estimator: str = "lstsq") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (dim 1) affine y ~ a x + b over the other dims, b = E[y] - a E[x].
    'lstsq' [paper]: a = Cov/Var, the least-squares slope; it shrinks the corrected feature's spread to
    rho^2 Var(y) when the correlation rho < 1. 'moments' [ours]: a = sign(Cov) sd(y)/sd(x), which keeps
    the corrected feature's per-channel mean and variance those of y (at a larger MSE)."""
    if x.shape != y.shape or x.dim() < 2:
        raise ConfigError(
            f"channel_affine needs equal shapes with a channel dim, got {tuple(x.shape)}, {tuple(y.shape)}.")
    xc = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    yc = y.transpose(0, 1).reshape(y.shape[1], -1).double()
    mx, my = xc.mean(1), yc.mean(1)
    var = ((xc - mx[:, None]) ** 2).mean(1)
    cov = ((xc - mx[:, None]) * (yc - my[:, None])).mean(1)
    if estimator == "moments":
        var_y = ((yc - my[:, None]) ** 2).mean(1)
        slope = torch.sign(cov) * (var_y / var.clamp_min(eps)).sqrt()
    elif estimator == "lstsq":
        slope = cov / var.clamp_min(eps)
    else:
        raise ConfigError(f"estimator must be one of {list(DEC_ESTIMATORS)}, got {estimator!r}.")
    a = torch.where(var > eps, slope, torch.zeros_like(var))
    return a.float(), (my - a * mx).float()


def apply_affine(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * a.reshape(shape) + b.reshape(shape)


class CacheCorrection:
    """Per cached step (a, b) for the reused cache; `fit=True` fits each step on first use."""

    def __init__(self, dc: DeepCacheUNet, cond: dict | None = None, estimator: str = "lstsq") -> None:
        self.dc, self.cond, self.params, self.fitting = dc, cond or {}, {}, False
        self.estimator = estimator
        self.errors: dict[int, tuple[float, float]] = {}  # step -> (error before, after) while fitting

    def __call__(self, i: int, t: Any, x: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
        if self.fitting:
            _, truth = self.dc.full(x, t, **self.cond)
            a, b = channel_affine(cache, truth, estimator=self.estimator)
            self.params[i] = (a, b)
            fixed = apply_affine(cache, a, b)
            self.errors[i] = (float((cache - truth).pow(2).mean()), float((fixed - truth).pow(2).mean()))
            return fixed
        if i not in self.params:
            return cache
        return apply_affine(cache, *self.params[i])


# --------------------------------------------------------------------------------------- per-step quantizers
class StepClock:
    """The current sampling step, shared by every per-timestep quantizer and correction."""

    def __init__(self) -> None:
        self.i = 0

    def set(self, i: int) -> None:
        self.i = int(i)


class StepActQuant(QuantizerBase):
    """Activation quantizer with one (step, zero) per sampling step (a `TimestepQuantizer` + clock)."""

    def __init__(self, bits: int, steps: int, clock: StepClock, symmetric: bool = False,
                 observer: str = "percentile", max_elems: int = 1 << 15, p: float = 2.0,
                 chunk: int = 0) -> None:
        super().__init__()
        self.role, self.bits, self.clock = "act", bits, clock
        self.tq = TimestepQuantizer(bits, steps, symmetric)
        self.tq.role = "act_table"  # not an independent activation quantizer: the parent owns it
        self.observer_kind, self.max_elems, self.p, self.chunk = observer, max_elems, p, chunk
        self._obs: Observer | None = None
        self._running: tuple[torch.Tensor, torch.Tensor] | None = None

    def _observer(self) -> Observer:
        return Observer(self.observer_kind, self.bits, self.tq.symmetric, p=self.p, max_elems=self.max_elems)

    def start_observing(self) -> None:
        self._obs, self._running = self._observer(), None
        self.observing = True

    def _observe_chunks(self, x: torch.Tensor) -> None:
        """[code] One range per chunk of `chunk` samples, running-averaged: r = 0.9 r + 0.1 r_chunk
        (the first chunk initialises r), as the official calibration updates x_min / x_max."""
        for part in x.detach().split(self.chunk):
            obs = self._observer()
            obs.update(part.reshape(1, -1))
            lo, hi = obs.range()
            self._running = (lo, hi) if self._running is None else (
                0.9 * self._running[0] + 0.1 * lo, 0.9 * self._running[1] + 0.1 * hi)

    def finish_observing(self) -> None:
        """Store the observed range as the current step's entry."""
        rng = self._running
        if rng is None and self._obs is not None and self._obs.has_data:
            rng = self._obs.range()
        if rng is not None:
            lo, hi = rng
            step, zero = choose_qparams(lo.reshape(()), hi.reshape(()), self.bits, self.tq.symmetric)
            with torch.no_grad():
                self.tq.step[self.clock.i] = step
                self.tq.zero[self.clock.i] = zero
        self._obs, self._running, self.observing = None, None, False
        self.calibrated = self.tq.calibrated = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing and self._obs is not None:
            if self.chunk:
                self._observe_chunks(x)
            else:
                self._obs.update(x.detach().reshape(1, -1))
        if not self.enabled or not self.calibrated:
            return x
        return self.tq(x, torch.full((x.shape[0],), self.clock.i, dtype=torch.long))


class CorrectedLayer(nn.Module):
    """A QuantConv2d whose output gets a per-step, per-channel affine quantization-error correction."""

    def __init__(self, layer: _QuantWeightLayer, clock: StepClock) -> None:
        super().__init__()
        self.layer, self.clock, self.params, self.fitting = layer, clock, {}, False
        self.errors: dict[int, tuple[float, float]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x)
        i = self.clock.i
        if self.fitting:
            truth = self.layer.fp_forward(x)
            self.params[i] = channel_affine(y, truth)
            fixed = apply_affine(y, *self.params[i])
            self.errors[i] = (float((y - truth).pow(2).mean()), float((fixed - truth).pow(2).mean()))
            return fixed
        return apply_affine(y, *self.params[i]) if i in self.params else y


class HalfCorrectedShortcut(nn.Module):
    """[code] A 1x1 QuantConv2d shortcut over cat([cache, skip]) whose cached half alone gets the
    per-step, per-output-channel affine correction: y = a (W_q,c Q(x)_c) + b + W_q,s Q(x)_s + bias,
    regressed on the FP half W_c x_c. a (W_q,c Q(x)_c) = (a W_q,c) Q(x)_c, so this is the official
    code's scale folded into that half's weights (and b into the bias)."""

    def __init__(self, layer: _QuantWeightLayer, clock: StepClock, split: int) -> None:
        super().__init__()
        if not isinstance(layer, QuantConv2d) or layer.kernel_size != (1, 1) or layer.groups != 1:
            raise ConfigError("quant_dec_on='shortcut_half' corrects a 1x1 QuantConv2d shortcut with "
                              "groups=1; "
                              f"got {type(layer).__name__}. Use quant_dec_on='consumers'.")
        if not 0 < split < layer.in_channels:
            raise ConfigError(f"the cached half must be 1..{layer.in_channels - 1} channels, got {split}.")
        self.layer, self.clock, self.split, self.params, self.fitting = layer, clock, split, {}, False
        self.errors: dict[int, tuple[float, float]] = {}

    def _conv(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        lay = self.layer
        return torch.nn.functional.conv2d(x, w, bias, lay.stride, lay.padding, lay.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, wq, k = self.layer.a_quant(x), self.layer.qweight(), self.split
        cached = self._conv(xq[:, :k], wq[:, :k])
        rest = self._conv(xq[:, k:], wq[:, k:], self.layer.bias)
        i = self.clock.i
        if self.fitting:
            truth = self._conv(x[:, :k], self.layer.weight[:, :k])
            self.params[i] = channel_affine(cached, truth)
            fixed = apply_affine(cached, *self.params[i])
            self.errors[i] = (float((cached - truth).pow(2).mean().detach()),
                              float((fixed - truth).pow(2).mean().detach()))
            return fixed + rest
        return (apply_affine(cached, *self.params[i]) if i in self.params else cached) + rest


def quant_dec_targets(dc: DeepCacheUNet) -> list[str]:
    """conv1 and conv_shortcut of the ResBlock the cached tensor enters (the cache consumers); none
    when the cache point is an attention input."""
    point = dc.point
    if point.kind != "res":
        return []
    res = dc.unet.up_blocks[point.up_block].resnets[point.index]
    pre = f"up_blocks.{point.up_block}.resnets.{point.index}"
    return [f"{pre}.{n}" for n in ("conv1", "conv_shortcut") if getattr(res, n, None) is not None]


# --------------------------------------------------------------------------------------- config + pipeline
@dataclass(frozen=True)
class CacheQuantConfig:
    """One configuration of the cache x quantization grid.

    interval: cache interval N (1 = no caching); schedule: uniform | nonuniform | dps | qdps;
    bits: a `methods.quant.bits` spec, 'fp' or w2..16 a2..16 (w8a8, w4a8, ...), stored in canonical
    spelling; cache_dec / quant_dec: the two corrections; split: Q-Diffusion
    split of skip concatenations; branch: DeepCache branch (a whole up-block input); cache_point: a
    `methods.unet_blocks` address ("up.2.res.1"), replaces branch when set; calib_samples / dps_samples:
    trajectories used for calibration / DPS.
    """

    interval: int = 5
    schedule: str = "dps"
    bits: str = "w8a8"
    cache_dec: bool = True
    quant_dec: bool = True
    split: bool = True
    branch: int = 0
    cache_point: str = ""
    calib_samples: int = 8
    dps_samples: int = 8
    act_observer: str = "percentile"
    seed: int = 0
    quantizer: str = "qdiffusion"
    dq_iters: int = 20
    dq_calib: int = 256
    act_p: float = 2.0  # Lp exponent of the 'mse' activation search (the official code: 2.4)
    act_chunk: int = 0  # >0: ranges of chunks of this many samples, running-averaged 0.9/0.1 [code]
    dec_fit: str = "cached"  # cache DEC fitted on the cached trajectory [ours] | 'refresh' FP run [code]
    dec_samples: int = 0  # trajectories of the cache DEC fit; 0 = calib_samples
    dec_estimator: str = "lstsq"  # cache DEC slope: least squares [paper] | 'moments' (keeps variance) [ours]
    quant_dec_on: str = "consumers"  # conv1 + whole shortcut [ours] | 'shortcut_half' [code]
    attn_quant: bool = False  # quantize the attention q.k and softmax.v products [code]
    spacing: str = "uniform"  # DDIM step spacing: the scheduler's own | 'quad' [code, DDPM-CIFAR]
    version: int = 1

    def __post_init__(self) -> None:
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"quantizer must be one of {list(QUANTIZERS)}, got {self.quantizer!r}. "
                              f"{did_you_mean(str(self.quantizer), QUANTIZERS)}")
        if self.quantizer == "dilatequant":
            if canonical_bits(self.bits, **CQ_BITS) == "fp":
                raise ConfigError("quantizer 'dilatequant' quantizes the U-Net; bits 'fp' has nothing to "
                                  "quantize. Use bits like 'w4a4' or quantizer 'qdiffusion'.")
            canonical_bits(self.bits, **UNET_QAT_BITS, who="CacheQuant with quantizer 'dilatequant'")
            if self.dq_iters < 0 or self.dq_calib < 1:
                raise ConfigError(f"dq_iters must be >= 0 and dq_calib >= 1, got {self.dq_iters}, "
                                  f"{self.dq_calib}.")
        if not isinstance(self.interval, int) or self.interval < 1:
            raise ConfigError(f"interval must be an int >= 1, got {self.interval!r}.")
        if self.schedule not in CQ_SCHEDULES:
            raise ConfigError(f"schedule must be one of {CQ_SCHEDULES}, got {self.schedule!r}. "
                              f"{did_you_mean(str(self.schedule), CQ_SCHEDULES)}")
        object.__setattr__(self, "bits", canonical_bits(self.bits, **CQ_BITS))
        if self.schedule == "qdps" and self.bits == "fp":
            raise ConfigError("schedule 'qdps' needs a quantized model; use bits w8a8/w4a8 or 'dps'.")
        if self.calib_samples < 1 or self.dps_samples < 1:
            raise ConfigError(
                f"calib_samples and dps_samples must be >= 1, got {self.calib_samples}, {self.dps_samples}.")
        if self.cache_point and not ADDRESS.match(str(self.cache_point).strip()):
            raise ConfigError(f"cache_point must be a block address like 'up.2.res.1', 'up.1.attn.0' or "
                              f"'down.0.down' (list them with methods.unet_blocks.cache_points), got "
                              f"{self.cache_point!r}; leave it empty to cache at `branch`.")
        if self.cache_point and self.branch != 0:
            raise ConfigError(f"give either branch ({self.branch}) or cache_point ({self.cache_point!r}), "
                              "not both: a cache point names one block; set branch back to 0.")
        for name, value, choices in (("dec_fit", self.dec_fit, DEC_FITS),
                                     ("dec_estimator", self.dec_estimator, DEC_ESTIMATORS),
                                     ("quant_dec_on", self.quant_dec_on, QUANT_DEC_ON),
                                     ("spacing", self.spacing, SPACINGS)):
            if value not in choices:
                raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}. "
                                  f"{did_you_mean(str(value), choices)}")
        if not self.act_p > 0 or self.act_chunk < 0 or self.dec_samples < 0:
            raise ConfigError(f"need act_p > 0, act_chunk >= 0 (0 = one range per step) and dec_samples >= 0 "
                              f"(0 = calib_samples); got {self.act_p}, {self.act_chunk}, {self.dec_samples}.")
        if self.quantizer == "dilatequant" and (self.attn_quant or self.act_chunk or self.act_p != 2.0):
            raise ConfigError("attn_quant, act_chunk and act_p shape CacheQuant's own quantizer; with "
                              "quantizer "
                              "'dilatequant' leave them at their defaults (False, 0, 2.0).")
        if self.version != 1:
            raise ConfigError(f"CacheQuantConfig version {self.version} is unknown; this code reads 1.")

    @property
    def quantized(self) -> bool:
        return self.bits != "fp"

    @property
    def cache_at(self) -> str:
        """The cache location as memo keys and reports name it: the address, or 'branch.B'."""
        return self.cache_point or f"branch.{self.branch}"

    @property
    def dec_trajectories(self) -> int:
        return self.dec_samples or self.calib_samples

    @property
    def noise_needed(self) -> int:
        """Calibration noise samples this config reads (calibration, DPS and DEC trajectories)."""
        return max(self.calib_samples, self.dps_samples, self.dec_trajectories)

    def deepcache(self, unet: nn.Module) -> DeepCacheUNet:
        """`unet` wrapped to cache at this config's point (cache_point, else branch)."""
        if self.cache_point:
            return DeepCacheUNet(unet, cache_point=self.cache_point)
        return DeepCacheUNet(unet, self.branch)

    def quant_config(self) -> QuantConfig:
        w, a = parse_bits(self.bits).wa
        return QuantConfig(w_bits=w, a_bits=a, a_observer=self.act_observer, a_p=self.act_p,
                           quant_matmul=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"interval": ("categorical", [1, 2, 3, 5, 10]),
                "schedule": ("categorical", list(CQ_SCHEDULES)),
                "bits": ("categorical", ["fp", "w8a8", "w4a8"]), "cache_dec": ("categorical", [False, True]),
                "quant_dec": ("categorical", [False, True])}


def preset_config(preset: str = "ours", **fields: Any) -> CacheQuantConfig:
    """A `CacheQuantConfig` starting from a named preset (`PRESETS`); `fields` override it."""
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {list(PRESETS)}, got {preset!r}. "
                          f"{did_you_mean(str(preset), PRESETS)}")
    return CacheQuantConfig(**{**PRESETS[preset], **fields})


@dataclass
class CacheQuantSampler:
    """A prepared configuration: `sample(noise)` runs the cached (and quantized, corrected) sampler."""

    dc: DeepCacheUNet
    scheduler: Any
    steps: int
    refresh: list[int]
    clock: StepClock
    cache_fix: CacheCorrection | None = None
    report: dict = field(default_factory=dict)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        return sample_loop(self.dc, self.scheduler, noise, self.steps, self.refresh, cond=cond,
                           on_step=lambda i, t: self.clock.set(i), transform_cache=self.cache_fix)


def _mean_errors(errors: dict[int, tuple[float, float]]) -> tuple[float, float]:
    if not errors:
        return float("nan"), float("nan")
    n = len(errors)
    return sum(e[0] for e in errors.values()) / n, sum(e[1] for e in errors.values()) / n


def step_act_quantizers(model: nn.Module) -> list[StepActQuant]:
    return [m for m in model.modules() if isinstance(m, StepActQuant)]


@torch.no_grad()
def quantize_per_timestep(
    unet: nn.Module, config: CacheQuantConfig, scheduler: Any, steps: int, refresh: list[int],
    noise: torch.Tensor, clock: StepClock, cache_fix: CacheCorrection | None = None, cond: dict | None = None,
) -> nn.Module:
    """Fake-quantized copy of `unet` with per-timestep activation ranges calibrated along the cached
    trajectory of `noise` (quantized weights, FP activations while observing)."""
    qc = config.quant_config()
    qm = quantize_(copy.deepcopy(unet), qc).eval()

    def make(layer: _QuantWeightLayer) -> StepActQuant:
        return StepActQuant(layer.a_bits, steps, clock, qc.a_symmetric, config.act_observer,
                            p=config.act_p, chunk=config.act_chunk)

    for _, layer in list(qm.named_modules()):
        if isinstance(layer, _QuantWeightLayer):
            layer.calibrate_weight()
            layer.a_quant = make(layer)
    if config.split:
        t_mid = int(scheduler.config.num_train_timesteps) // 2
        apply_split(qm, find_concat_splits(unet, noise, t_mid, cond), make)
    if config.attn_quant:
        from methods.quant.diffusers_attention import install_quant_attention

        install_quant_attention(qm, qc.a_bits, qc, make=lambda: StepActQuant(
            qc.a_bits, steps, clock, qc.a_symmetric, config.act_observer, p=config.act_p,
            chunk=config.act_chunk))
    qm.to(next(unet.parameters()).device)  # the new quantizer tables start on the CPU
    acts = step_act_quantizers(qm)
    for q in acts:
        q.enabled = False

    def on_step(i, t):
        clock.set(i)
        for q in acts:
            q.start_observing()

    def done(*_):
        for q in acts:
            q.finish_observing()

    sample_loop(config.deepcache(qm), scheduler, noise, steps, refresh, cond=cond,
                on_step=on_step, transform_cache=cache_fix, record=done)
    for q in acts:
        q.enabled = True
    for m in qm.modules():
        if isinstance(m, SplitActQuant):
            m.finish_observing()
    return qm


@torch.no_grad()
def prepare_cachequant(
    unet: nn.Module, scheduler: Any, steps: int, config: CacheQuantConfig, calib_noise: torch.Tensor,
    cond: dict | None = None, memo: dict | None = None,
) -> CacheQuantSampler:
    """Schedule (uniform / non-uniform / DPS / quantization-aware DPS), cache DEC, per-timestep
    quantization, quantization DEC; returns an evaluation-ready sampler with a report.

    `memo` (a dict the caller keeps) caches what several configurations share: the FP DPS features,
    the quantized features of quantization-aware DPS and fitted cache corrections. The caller must
    keep one memo per (model, scheduler, steps, calibration noise).
    """
    start = time.perf_counter()
    cond = cond or {}
    clock = StepClock()
    if len(calib_noise) < config.noise_needed:
        raise ConfigError(f"this config reads {config.noise_needed} calibration noise samples (calib "
                          f"{config.calib_samples}, DPS {config.dps_samples}, DEC "
                          f"{config.dec_trajectories}); "
                          f"received {len(calib_noise)}. Pass more noise or lower those sizes.")
    scheduler = build_spaced_scheduler(scheduler, config.spacing)
    fp_dc = config.deepcache(unet)
    dps_noise, cal_noise = calib_noise[: config.dps_samples], calib_noise[: config.calib_samples]
    report: dict[str, Any] = {}
    memo = {} if memo is None else memo
    dq_model = None
    if config.quantized and config.quantizer == "dilatequant":
        dq_model, clock = _dilatequant_model(unet, scheduler, steps, config, cal_noise, cond, memo, report)
    refresh = _choose_schedule(unet, scheduler, steps, config, fp_dc, dps_noise, cal_noise, clock, cond,
                               report, memo, dq_model)
    report["refresh"] = list(refresh)
    cache_fix = None
    if config.cache_dec and len(refresh) < steps:
        key = ("cache_fix", config.cache_at, tuple(refresh), config.dec_trajectories, config.dec_fit,
               config.spacing, config.dec_estimator)
        if key not in memo:
            fit = fit_cache_correction_refresh if config.dec_fit == "refresh" else fit_cache_correction
            memo[key] = fit(fp_dc, scheduler, steps, refresh, calib_noise[: config.dec_trajectories], cond,
                            estimator=config.dec_estimator)
        cache_fix = memo[key]
        report["cache_dec_mse_before"], report["cache_dec_mse_after"] = _mean_errors(cache_fix.errors)
    dc = fp_dc
    if config.quantized:
        if dq_model is not None:
            qm = dq_model
        else:
            qm = quantize_per_timestep(unet, config, scheduler, steps, refresh, cal_noise, clock, cache_fix,
                                       cond)
        dc = config.deepcache(qm)
        if config.quant_dec:
            _fit_quant_dec(dc, scheduler, steps, refresh, cal_noise, clock, cache_fix, cond, report,
                           config.quant_dec_on)
        finalize_for_eval(qm)
        check_ready_for_eval(qm)
    report["calib_seconds"] = time.perf_counter() - start
    return CacheQuantSampler(dc, scheduler, steps, list(refresh), clock, cache_fix, report)


@torch.no_grad()
def fit_cache_correction(dc: DeepCacheUNet, scheduler: Any, steps: int, refresh: list[int],
                         noise: torch.Tensor, cond: dict | None = None,
                         estimator: str = "lstsq") -> CacheCorrection:
    """Cache DEC fitted step by step along the cached trajectory of `noise` (errors kept per step)."""
    fix = CacheCorrection(dc, cond, estimator)
    fix.fitting = True
    sample_loop(dc, scheduler, noise, steps, refresh, cond=cond, transform_cache=fix)
    fix.fitting = False
    return fix


@torch.no_grad()
def fit_cache_correction_refresh(dc: DeepCacheUNet, scheduler: Any, steps: int, refresh: list[int],
                                 noise: torch.Tensor, cond: dict | None = None,
                                 estimator: str = "lstsq") -> CacheCorrection:
    """[code] Cache DEC regressed on one FP run that refreshes every step: for each cached step t,
    X = F_r(t) (the feature of the step that would have refreshed) and Y = F_t, both from that run.
    Streams the run (only the current group's anchor feature is kept)."""
    fix = CacheCorrection(dc, cond, estimator)
    refresh_set, anchor = set(refresh), {}

    def record(i, t, x, feature, refreshed):
        if i in refresh_set:
            anchor["f"] = feature.clone()
            return
        a, b = channel_affine(anchor["f"], feature, estimator=estimator)
        fix.params[i] = (a, b)
        fixed = apply_affine(anchor["f"], a, b)
        fix.errors[i] = (float((anchor["f"] - feature).pow(2).mean()), float((fixed - feature).pow(2).mean()))

    sample_loop(dc, scheduler, noise, steps, list(range(steps)), cond=cond, record=record)
    return fix


def _dilatequant_model(unet, scheduler, steps, config, cal_noise, cond, memo, report):
    """A fresh copy of DilateQuant's quantized U-Net for this configuration and the step index that
    drives its per-step quantizers (it replaces the sampler's clock). The model is trained once per
    (bits, calibration, iterations, seed) and kept in `memo`: it does not depend on the cache schedule
    [inferred: calibrated and distilled on the FP sampler's refresh-every-step trajectories, as
    DilateQuant does; CacheQuant's own quantizer calibrates on the cached trajectory]. Each
    configuration gets a deep copy, because quantization DEC wraps layers of the model in place."""
    if cond:
        raise ConfigError("quantizer 'dilatequant' takes unconditional UNet2DModel U-Nets; got conditioning "
                          f"{sorted(cond)}. Use quantizer 'qdiffusion'.")
    key = ("dilatequant", config.bits, config.calib_samples, config.dq_calib, config.dq_iters, config.seed,
           config.spacing)
    if key not in memo:
        traj = fp_trajectories(unet, scheduler, cal_noise, steps)
        size = min(config.dq_calib, traj.trajectories * steps)
        dq_cfg = DilateQuantConfig(bits=config.bits, iters=config.dq_iters, calib_size=size,
                                   batch_size=min(32, size), trajectories=traj.trajectories, seed=config.seed)
        with torch.enable_grad():  # BKD trains; prepare_cachequant itself runs without grad
            sampler = prepare_dilatequant(unet, scheduler, steps, dq_cfg, traj.pick(size, config.seed))
        memo[key] = (sampler.unet, sampler.report["quantize_seconds"], size)
    model, seconds, size = memo[key]
    model = copy.deepcopy(model)
    index = next(m.index for m in model.modules() if isinstance(m, TemporalActQuant))
    report.update(dq_quantize_seconds=seconds, dq_calib_size=size)
    return model, index


def _choose_schedule(unet, scheduler, steps, config, fp_dc, dps_noise, cal_noise, clock, cond, report, memo,
                     dq_model=None):
    if config.interval == 1:
        return list(range(steps))
    if config.schedule in SCHEDULES:
        return cache_schedule(config.schedule, steps, config.interval)
    key = ("feats", config.cache_at, config.dps_samples, config.spacing)
    if key not in memo:
        memo[key] = record_features(fp_dc, scheduler, dps_noise, steps, cond=cond)
    feats, ref = memo[key], None
    if config.schedule == "qdps":
        qkey = ("qfeats", config.cache_at, config.bits, config.split, config.dps_samples,
                config.calib_samples, config.quantizer, config.dq_calib, config.dq_iters, config.seed,
                config.spacing, config.act_observer, config.act_p, config.act_chunk, config.attn_quant)
        if qkey not in memo:
            every = list(range(steps))
            qfull = dq_model if dq_model is not None else quantize_per_timestep(
                unet, config, scheduler, steps, every, cal_noise, clock, None, cond)
            memo[qkey] = record_features(config.deepcache(qfull), scheduler, dps_noise, steps,
                                         cond=cond, clock=clock)
        ref = memo[qkey]
    refresh = dps_schedule(feats, config.interval, ref)
    cost = group_cost(distance_table(feats))  # report both schedules on the FP objective
    report["dps_objective"] = schedule_cost(cost, refresh, steps)
    uniform = cache_schedule("uniform", steps, config.interval)
    report["uniform_objective"] = schedule_cost(cost, uniform, steps)
    return refresh


def _fit_quant_dec(dc, scheduler, steps, refresh, noise, clock, cache_fix, cond, report,
                   on: str = "consumers") -> None:
    layers = []
    targets = quant_dec_targets(dc)
    if on == "shortcut_half":
        targets = [n for n in targets if n.endswith(".conv_shortcut")]
        t_mid = int(scheduler.config.num_train_timesteps) // 2
        splits = find_concat_splits(dc.unet, noise, t_mid, cond) if targets else {}
    for name in targets:
        layer = dc.unet.get_submodule(name)
        if not isinstance(layer, QuantConv2d) or (on == "shortcut_half" and name not in splits):
            continue
        parent, attr = name.rsplit(".", 1)
        wrapped = HalfCorrectedShortcut(layer, clock, splits[name]) if on == "shortcut_half" else \
            CorrectedLayer(layer, clock)
        setattr(dc.unet.get_submodule(parent), attr, wrapped)
        layers.append(wrapped)
    for w in layers:
        w.fitting = True
    sample_loop(dc, scheduler, noise, steps, refresh, cond=cond, on_step=lambda i, t: clock.set(i),
                transform_cache=cache_fix)
    errs: dict[int, tuple[float, float]] = {}
    for k, w in enumerate(layers):
        w.fitting = False
        errs.update({k * steps + i: e for i, e in w.errors.items()})
    report["quant_dec_mse_before"], report["quant_dec_mse_after"] = _mean_errors(errs)


def cachequant_method(unet, scheduler, steps, config=None, calib_noise=None, cond=None,
                      memo=None) -> CacheQuantSampler:
    """`DIFFUSION_METHODS` entry (methods/diffusion.py): `prepare_cachequant` with defaults
    (calibration noise seeded `config.seed`)."""
    config = config or CacheQuantConfig()
    if calib_noise is None:
        size = unet.config.sample_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        n = max(config.calib_samples, config.dps_samples)
        gen = torch.Generator().manual_seed(config.seed)
        calib_noise = torch.randn((n, unet.config.in_channels, *size), generator=gen)
    return prepare_cachequant(unet, scheduler, steps, config, calib_noise, cond, memo)
