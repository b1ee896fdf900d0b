"""Range estimators ("observers") for uniform quantizers.

Pure range functions work on the blocked 2-D view of `primitives.to_blocks` (n_blocks, elems) and
return (lo, hi), each (n_blocks, 1). Stateful observers accumulate over calibration batches.

* min-max and running (EMA) min-max: standard.
* MSE/Lp grid search: shrink [l, u] by (1 - 0.01 i), i = 0, 2, ..., 78 (40 candidates) and keep the
  candidate minimising mean |Q(x) - x|^p; p = 2.0 by default, 2.4 in BRECQ's activation stage
  [code: CacheQuant `quant/quant_layer.py`, BRECQ].
* percentile: clip at the p and 1 - p quantiles for p in {0.999, 0.9999, 0.99999} (and the plain
  min-max), keep the lowest MSE [code: CacheQuant / Q-Diffusion activation init]. Quantiles come
  from `torch.kthvalue` along rows, never `torch.quantile`, which refuses inputs above 2^24
  elements (the SAQ-SAM code falls back to NumPy for this reason [code]).
* Sample-based observers keep a bounded random subsample per batch (`max_elems`) so memory stays
  flat on long calibration runs [our design].
"""

from __future__ import annotations

import math

import torch

from methods.errors import ConfigError
from methods.quant.primitives import choose_qparams, fake_quantize, qrange

OBSERVERS = ("minmax", "ema", "percentile", "mse")
MSE_SHRINK = tuple(1.0 - 0.01 * i for i in range(0, 80, 2))  # 40 candidates
PERCENTILES = (0.999, 0.9999, 0.99999)


def minmax_range(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return blocks.amin(dim=1, keepdim=True), blocks.amax(dim=1, keepdim=True)


def row_quantile(blocks: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile by `kthvalue` (nearest rank), valid for any number of elements."""
    n = blocks.shape[1]
    k = min(max(int(math.ceil(q * n)), 1), n)
    return blocks.kthvalue(k, dim=1, keepdim=True).values


def percentile_range(blocks: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0.5 < p <= 1.0:
        raise ConfigError(f"percentile p must be in (0.5, 1], got {p}.")
    return row_quantile(blocks, 1.0 - p), row_quantile(blocks, p)


def lp_error(
    blocks: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool, p: float
) -> torch.Tensor:
    """Mean |Q(x) - x|^p per block for the range [lo, hi]."""
    qmin, qmax = qrange(bits, symmetric)
    step, zero = choose_qparams(lo, hi, bits, symmetric)
    err = (fake_quantize(blocks, step, zero, qmin, qmax) - blocks).abs().pow(p)
    return err.mean(dim=1, keepdim=True)


def _pick_best(blocks, candidates, bits, symmetric, p):
    best_lo, best_hi = candidates[0]
    best_err = lp_error(blocks, best_lo, best_hi, bits, symmetric, p)
    for lo, hi in candidates[1:]:
        err = lp_error(blocks, lo, hi, bits, symmetric, p)
        better = err < best_err
        best_lo = torch.where(better, lo, best_lo)
        best_hi = torch.where(better, hi, best_hi)
        best_err = torch.minimum(err, best_err)
    return best_lo, best_hi


def mse_range(
    blocks: torch.Tensor, bits: int, symmetric: bool, p: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lp grid search over 40 shrink factors of the min-max range, per block."""
    lo, hi = minmax_range(blocks)
    cands = [(lo * f, hi * f) for f in MSE_SHRINK]
    return _pick_best(blocks, cands, bits, symmetric, p)


def percentile_mse_range(
    blocks: torch.Tensor, bits: int, symmetric: bool, percentiles=PERCENTILES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max and the percentile clips; keep the lowest MSE per block."""
    cands = [minmax_range(blocks)] + [percentile_range(blocks, q) for q in percentiles]
    return _pick_best(blocks, cands, bits, symmetric, 2.0)


class Observer:
    """Accumulates statistics of blocked tensors over calibration batches; `range()` gives (lo, hi)."""

    def __init__(
        self,
        kind: str,
        bits: int,
        symmetric: bool,
        p: float = 2.0,
        momentum: float = 0.9,
        max_elems: int = 1 << 18,
        seed: int = 0,
    ) -> None:
        if kind not in OBSERVERS:
            raise ConfigError(f"observer must be one of {OBSERVERS}, got {kind!r}.")
        self.kind, self.bits, self.symmetric, self.p = kind, bits, symmetric, p
        self.momentum, self.max_elems = momentum, max_elems
        self._gen = torch.Generator().manual_seed(seed)
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        self._samples: list[torch.Tensor] = []

    def update(self, blocks: torch.Tensor) -> None:
        blocks = blocks.detach().float()
        if self.kind in ("minmax", "ema"):
            lo, hi = minmax_range(blocks)
            if self.lo is None:
                self.lo, self.hi = lo, hi
            elif self.kind == "minmax":
                self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
            else:
                m = self.momentum
                self.lo, self.hi = m * self.lo + (1 - m) * lo, m * self.hi + (1 - m) * hi
            return
        keep = max(self.max_elems // 8, 1)
        if blocks.shape[1] > keep:
            # A random column subset per batch keeps memory bounded; extremes are tracked exactly
            # by storing each row's min and max too.
            idx = torch.randperm(blocks.shape[1], generator=self._gen)[:keep]
            lo, hi = minmax_range(blocks)
            blocks = torch.cat([blocks[:, idx], lo, hi], dim=1)
        self._samples.append(blocks)
        total = sum(s.shape[1] for s in self._samples)
        if total > self.max_elems:
            merged = torch.cat(self._samples, dim=1)
            idx = torch.randperm(merged.shape[1], generator=self._gen)[: self.max_elems]
            self._samples = [merged[:, idx]]

    @property
    def has_data(self) -> bool:
        return self.lo is not None or bool(self._samples)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.has_data:
            raise ConfigError(
                "The observer saw no data: run calibration batches through the model before asking "
                "for quantization parameters."
            )
        if self.kind in ("minmax", "ema"):
            return self.lo, self.hi
        data = torch.cat(self._samples, dim=1)
        if self.kind == "mse":
            return mse_range(data, self.bits, self.symmetric, self.p)
        return percentile_mse_range(data, self.bits, self.symmetric)


def range_for(kind: str, blocks: torch.Tensor, bits: int, symmetric: bool, p: float = 2.0):
    """One-shot range of a tensor (weights): the same estimators without accumulation."""
    obs = Observer(kind, bits, symmetric, p=p, max_elems=max(blocks.shape[1], 1) * 8)
    obs.update(blocks)
    return obs.range()
