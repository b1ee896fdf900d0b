"""Statistics every bench shares: confidence intervals over seeds or samples, paired differences,
per-seed spread, and one rule for when a claimed effect is distinguishable from noise.

Use `mean_ci` (Student t-interval) for a metric over a handful of seeds (3-10): with so few units a
bootstrap cannot see the tails and its interval is too narrow. Use `bootstrap_ci` for many units
(per-image or per-sample scores) or for a statistic other than the mean. A difference between two
configurations measured on the same units (same seeds, same samples) goes through
`paired_difference`, which works on the per-unit differences and so removes the unit-to-unit
variance both share; `unpaired_difference` is for independent groups. `compare` and `claim_line`
turn an effect into the verdict a bench prints: "supported" only when the interval excludes zero
and the effect is larger than the noise floor the caller measured.

Methods, as published:
- Student t-interval for a mean: mean ± t_{(1+level)/2, n-1} · s / sqrt(n), s with ddof=1
  (Student, "The probable error of a mean", Biometrika 6, 1908). Matches `scipy.stats.t.interval`.
- Welch's interval for a difference of independent means, with the Welch-Satterthwaite degrees of
  freedom (Welch, Biometrika 34, 1947). Matches `scipy.stats.ttest_ind(equal_var=False)`.
- Percentile bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall
  1993, ch. 13) and bias-corrected and accelerated BCa (ibid. ch. 14; Efron, "Better bootstrap
  confidence intervals", JASA 82, 1987), the acceleration from the jackknife (ibid. ch. 11, eq.
  14.15). The bias correction counts ties as half, as `scipy.stats.bootstrap` does.
- Paired bootstrap: resample units with both measurements kept together, i.e. bootstrap the
  per-unit differences (ibid. ch. 6-7 on resampling the sampling unit).

Our design [inferred]: the `Estimate` record and its text form, vectorised resampling in bounded
blocks, refusing rather than repairing bad input (NaN, fewer than two units, unequal pairs), the
noise floor as the t upper bound of mean |null effect| between same-distribution runs, and the
verdict rule (interval excludes 0 and |effect| above the floor's upper bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import special
from scipy import stats as _sps

from methods.errors import ConfigError, did_you_mean

__all__ = [
    "Estimate",
    "Verdict",
    "bootstrap_ci",
    "claim_line",
    "compare",
    "mean_ci",
    "noise_floor",
    "over_draws_ci",
    "paired_difference",
    "seed_spread",
    "unpaired_difference",
]

Values = Sequence[float] | np.ndarray  # one number per unit (seed or sample)
_BLOCK = 1 << 21  # elements resampled at once: bounds memory for long inputs
_MIN_BOOT = 100


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval [lo, hi] at `level`, over `n` units."""

    value: float
    lo: float
    hi: float
    n: int
    level: float = 0.95
    method: str = ""

    def __post_init__(self) -> None:
        for name in ("value", "lo", "hi"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "level", _check_level(self.level))
        if isinstance(self.n, bool) or not isinstance(self.n, int | np.integer) or self.n < 1:
            raise ConfigError(f"Estimate.n must be a positive count of units, got {self.n!r}.")
        object.__setattr__(self, "n", int(self.n))
        if self.lo > self.hi:
            raise ConfigError(
                f"Estimate needs lo <= hi, got lo={self.lo!r} > hi={self.hi!r}; swap them or check "
                "how the interval was computed."
            )

    @property
    def half_width(self) -> float:
        """Half the interval's width (the ± part; the interval itself may be asymmetric)."""
        return (self.hi - self.lo) / 2.0

    def excludes(self, x: float = 0.0) -> bool:
        """True when `x` lies strictly outside [lo, hi]."""
        return x < self.lo or x > self.hi

    def as_fields(self, prefix: str) -> dict[str, float | int]:
        """`{prefix: value, prefix_lo: lo, prefix_hi: hi, prefix_n: n}` for result rows and summaries."""
        return {prefix: self.value, f"{prefix}_lo": self.lo, f"{prefix}_hi": self.hi, f"{prefix}_n": self.n}

    def __str__(self) -> str:
        d = _decimals(self.half_width)
        level = "" if self.level == 0.95 else f", {self.level:.0%}"
        return (
            f"{_fmt(self.value, d)} ± {_fmt(self.half_width, d)} "
            f"[{_fmt(self.lo, d)}, {_fmt(self.hi, d)}] (n={self.n}{level})"
        )


class Verdict(StrEnum):
    """What a bench may say about a claimed effect."""

    SUPPORTED = "supported"
    NOT_DISTINGUISHABLE = "not distinguishable"


# --------------------------------------------------------------------------- intervals


def mean_ci(values: Values, level: float = 0.95) -> Estimate:
    """Student t-interval for the mean of `values` (one per seed): the right tool for 3-10 seeds."""
    x = _values(values)
    level = _check_level(level)
    m, half = _t_half(x, level)
    return Estimate(m, m - half, m + half, x.size, level, "t")


def bootstrap_ci(
    values: Values,
    statistic: Callable[..., float] = np.mean,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> Estimate:
    """Bootstrap interval for `statistic(values)`; `method` is "percentile" or "bca".

    `statistic` maps a 1-D array to a number; one that takes `axis=` (numpy reductions) is applied
    to all resamples at once, any other one resample at a time. Deterministic for a given `seed`.
    """
    x = _values(values)
    level = _check_level(level)
    n_boot = _check_n_boot(n_boot)
    method = _choose(method, ("percentile", "bca"), "bootstrap_ci method")
    theta = _scalar(statistic, x)
    boot = _resampled(x, statistic, n_boot, np.random.default_rng(seed))
    alpha = (1.0 - level) / 2.0
    if method == "percentile":
        q = np.array([alpha, 1.0 - alpha])
        label = "percentile bootstrap"
    else:
        q = _bca_quantiles(x, statistic, theta, boot, alpha)
        label = "BCa bootstrap"
    lo, hi = np.quantile(boot, q)
    return Estimate(theta, lo, hi, x.size, level, label)


def grouped_jackknife_ci(
    rows: np.ndarray, statistic: Callable[[np.ndarray], float], groups: int = 16, level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """`statistic(rows)` with a delete-a-group jackknife t-interval over the rows (units along axis 0):
    the rows are split at random into g = min(groups, n // 2) (at least 2) groups, the statistic is
    recomputed with each group left out, SE^2 = (g - 1) / g * sum_j (S_(j) - mean)^2, interval
    S +- t_{g-1} SE (Efron & Tibshirani 1993, ch. 11, the delete-d jackknife). For statistics a
    bootstrap biases, e.g. a Frechet distance: resampling with replacement duplicates units, which
    shrinks a fitted covariance [ours, measured in actors/diffusion_quant_task.py]."""
    rows = np.asarray(rows)
    level = _check_level(level)
    value, se, df = _grouped_jackknife_se(rows, statistic, groups, seed)
    half = float(_sps.t.ppf((1 + level) / 2, df)) * se
    return Estimate(value, value - half, value + half, len(rows), level, "grouped jackknife")


def _grouped_jackknife_se(rows: np.ndarray, statistic: Callable[[np.ndarray], float], groups: int,
                          seed: int) -> tuple[float, float, int]:
    """(statistic, its delete-a-group jackknife SE, degrees of freedom g - 1)."""
    n = len(rows)
    g = max(2, min(groups, n // 2))
    value = float(statistic(rows))
    parts = np.array_split(np.random.default_rng(seed).permutation(n), g)
    loo = np.array([float(statistic(np.delete(rows, part, axis=0))) for part in parts])
    return value, math.sqrt((g - 1) / g * float(((loo - loo.mean()) ** 2).sum())), g - 1


def over_draws_ci(
    rows: np.ndarray, per_draw: Callable[[np.ndarray], Values], groups: int = 16, level: float = 0.95,
    seed: int = 0,
) -> tuple[Estimate, np.ndarray]:
    """Mean over S >= 2 independent draws (e.g. calibration seeds) of a statistic measured on units
    every draw shares (e.g. the same evaluation noise): `per_draw(rows)` returns the S per-draw values
    computed on `rows`. Two sources of variation, combined [ours]: the delete-a-group jackknife SE of
    the mean over the shared units (`grouped_jackknife_ci`'s, g - 1 degrees of freedom) and the
    between-draw SE s / sqrt(S) (S - 1 degrees of freedom); SE^2 is their sum and the t quantile takes
    the Welch-Satterthwaite degrees of freedom (Satterthwaite, Biometrics Bulletin 2, 1946). At 3 draws
    that is slightly liberal: 0.92-0.95 coverage in our simulations (offset sd 0-1 against unit sd 1,
    100 units); the draws-only df (S - 1) would over-cover at up to twice the width.
    Returns (Estimate over n = S draws, the S per-draw values on all rows)."""
    rows = np.asarray(rows)
    level = _check_level(level)
    draws = np.asarray(per_draw(rows), dtype=float)
    if draws.ndim != 1 or draws.size < 2:
        raise ConfigError(f"over_draws_ci needs at least 2 draws (one value each); per_draw returned shape "
                          f"{draws.shape}. Run the configuration under >= 2 (better >= 3) seeds.")
    value, se_w, df_w = _grouped_jackknife_se(rows, lambda r: float(np.mean(per_draw(r))), groups, seed)
    se_b2, df_b = float(draws.var(ddof=1)) / draws.size, draws.size - 1
    se2 = se_w**2 + se_b2
    if se2 == 0.0:
        return Estimate(value, value, value, draws.size, level, "jackknife + between-draw t"), draws
    df = se2**2 / (se_w**4 / df_w + se_b2**2 / df_b)
    half = float(_sps.t.ppf((1 + level) / 2, df)) * math.sqrt(se2)
    return Estimate(value, value - half, value + half, draws.size, level, "jackknife + between-draw t"), draws


def paired_difference(
    a: Values, b: Values, *, method: str = "t", level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> Estimate:
    """mean(a - b) over paired units (a[i], b[i] measured on the same seed or sample) with its CI.

    `method`: "t" (t-interval of the differences, the default for seeds), "bootstrap" (percentile)
    or "bca" (both resample whole units, for many samples).
    """
    x, y = _values(a, "a"), _values(b, "b")
    if x.size != y.size:
        raise ConfigError(
            f"paired_difference needs one value of a and one of b per unit, in the same order; got "
            f"{x.size} values in a and {y.size} in b. Align them by seed/sample id, or use "
            "unpaired_difference for independent groups."
        )
    method = _choose(method, ("t", "bootstrap", "bca"), "paired_difference method")
    d = x - y
    if method == "t":
        est = mean_ci(d, level)
    else:
        kind = "percentile" if method == "bootstrap" else "bca"
        est = bootstrap_ci(d, np.mean, n_boot=n_boot, level=level, seed=seed, method=kind)
    return Estimate(est.value, est.lo, est.hi, est.n, est.level, f"paired {est.method}")


def unpaired_difference(
    a: Values, b: Values, *, method: str = "t", level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> Estimate:
    """mean(a) - mean(b) for independent groups; `method` "t" (Welch) or "bootstrap" (percentile).

    `n` of the result is len(a) + len(b).
    """
    x, y = _values(a, "a"), _values(b, "b")
    level = _check_level(level)
    method = _choose(method, ("t", "bootstrap"), "unpaired_difference method")
    diff = float(x.mean() - y.mean())
    n = x.size + y.size
    if method == "t":
        va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
        se2 = va + vb
        if se2 == 0.0:
            return Estimate(diff, diff, diff, n, level, "welch t")
        dof = se2**2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
        half = float(_sps.t.ppf((1.0 + level) / 2.0, dof)) * math.sqrt(se2)
        return Estimate(diff, diff - half, diff + half, n, level, "welch t")
    n_boot = _check_n_boot(n_boot)
    rng = np.random.default_rng(seed)
    boot = _resampled(x, np.mean, n_boot, rng) - _resampled(y, np.mean, n_boot, rng)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return Estimate(diff, lo, hi, n, level, "unpaired percentile bootstrap")


def seed_spread(values: Values) -> dict[str, float | int]:
    """mean, std (ddof=1; NaN for one value), min, max and n of a metric over seeds."""
    x = _values(values, min_n=1)
    std = float(x.std(ddof=1)) if x.size > 1 else math.nan
    return {"mean": float(x.mean()), "std": std, "min": float(x.min()), "max": float(x.max()), "n": x.size}


def noise_floor(null_effects: Values, level: float = 0.95) -> Estimate:
    """How large an effect is between runs that differ only by chance: t-interval of mean |null|.

    `null_effects` are the caller's measurements of the same metric difference between two
    same-distribution runs (e.g. FD between two sample sets of the same model, one per seed).
    `compare` treats the upper bound as the floor an effect must exceed.
    """
    x = np.abs(_values(null_effects, "null_effects"))
    est = mean_ci(x, level)
    return Estimate(est.value, est.lo, est.hi, est.n, est.level, "noise floor, t of |null|")


def spread_floor(values: Values, level: float = 0.95) -> Estimate | None:
    """The noise floor of one arm measured over its own seeds: `noise_floor` of |x_i - x_j| for
    every pair of seeds i < j of the same configuration (runs that differ only by chance); None
    for two seeds (one pair has no interval: the effect's own CI is then all there is).

    For a paired effect this is conservative: pairing removes the shared part of that spread.
    """
    x = _values(values, "values")
    if len(x) < 3:
        return None
    i, j = np.triu_indices(len(x), k=1)
    return noise_floor(x[i] - x[j], level)


# --------------------------------------------------------------------------- verdicts


def compare(effect: Estimate, noise_floor: Estimate | float | None = None) -> Verdict:
    """The verdict: "supported" when effect's CI excludes 0 and |effect| exceeds the noise floor.

    A float floor is a magnitude (>= 0); an Estimate floor contributes its upper bound
    max(|lo|, |hi|). |effect| must be strictly greater.
    Anything else, including a NaN estimate, is "not distinguishable".
    """
    if not isinstance(effect, Estimate):
        raise ConfigError(
            f"compare needs an Estimate (from mean_ci, bootstrap_ci, paired_difference, ...), got "
            f"{type(effect).__name__}. Wrap the numbers in an interval first."
        )
    floor = _floor(noise_floor)
    if not effect.excludes(0.0):
        return Verdict.NOT_DISTINGUISHABLE
    if floor is not None and not abs(effect.value) > floor:
        return Verdict.NOT_DISTINGUISHABLE
    return Verdict.SUPPORTED


def claim_line(name: str, effect: Estimate, noise_floor: Estimate | float | None = None) -> str:
    """One printable claim, e.g. `fd_gain: -3.1 ± 1.2 [-4.3, -1.9] (n=3) noise floor 2.0 -> supported`."""
    verdict = compare(effect, noise_floor)
    floor = _floor(noise_floor)
    shown = "" if floor is None else f" noise floor {_fmt(floor, _decimals(effect.half_width))}"
    return f"{name}: {effect}{shown} -> {verdict}"


# --------------------------------------------------------------------------- helpers


def _values(values: object, name: str = "values", min_n: int = 2) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"{name} must be a 1-D sequence of numbers, got {type(values).__name__} ({e})."
        ) from e
    if x.ndim != 1:
        raise ConfigError(
            f"{name} must be 1-D (one value per seed or sample), got shape {x.shape}; pass one metric "
            "at a time."
        )
    if x.size < min_n:
        raise ConfigError(
            f"{name} needs at least {min_n} values (one per seed or sample), got {x.size}. Run more "
            "seeds, or report the single value without an interval."
        )
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ConfigError(
            f"{name} must all be finite, got {bad.size} non-finite of {x.size} (index {bad[0]}: "
            f"{x[bad[0]]}). Fix the metric that produced it, or drop failed seeds explicitly and say so."
        )
    return x


def _check_level(level: object) -> float:
    try:
        lv = float(level)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        lv = math.nan
    if not 0.0 < lv < 1.0:
        raise ConfigError(
            f"level must be a confidence level strictly between 0 and 1, got {level!r}; write 0.95 for 95%."
        )
    return lv


def _check_n_boot(n_boot: object) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < _MIN_BOOT:
        raise ConfigError(
            f"n_boot must be an integer number of resamples >= {_MIN_BOOT}, got {n_boot!r}; 2000 is "
            "a good default, 10000 for BCa or tail levels."
        )
    return int(n_boot)


def _choose(method: str, choices: tuple[str, ...], what: str) -> str:
    if method not in choices:
        raise ConfigError(
            f"{what} must be one of {', '.join(choices)}, got {method!r}. "
            f"{did_you_mean(str(method), choices)}"
        )
    return method


def _t_half(x: np.ndarray, level: float) -> tuple[float, float]:
    """Mean and t half-width of a 1-D array of n >= 2 values."""
    se = x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(_sps.t.ppf((1.0 + level) / 2.0, x.size - 1) * se)


def _scalar(statistic: Callable[..., float], x: np.ndarray) -> float:
    try:
        theta = float(np.asarray(statistic(x)))
    except TypeError as e:
        raise ConfigError(f"statistic must map a 1-D array to one number; calling it failed: {e}") from e
    if not math.isfinite(theta):
        raise ConfigError(f"statistic of the data must be finite, got {theta}; check the statistic.")
    return theta


def _reduce(statistic: Callable[..., float], rows: np.ndarray) -> np.ndarray:
    """statistic of each row of a 2-D array: vectorised with axis=-1 when it takes it, else row by row."""
    try:
        out = np.asarray(statistic(rows, axis=-1), dtype=float)
    except TypeError:
        out = None
    if out is None or out.shape != rows.shape[:1]:
        out = np.array([float(np.asarray(statistic(r))) for r in rows])
    return out


def _resampled(
    x: np.ndarray, statistic: Callable[..., float], n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """`n_boot` bootstrap replicates of statistic(x), resampling in blocks of bounded size."""
    n = x.size
    rows = max(1, _BLOCK // n)
    out = np.full(n_boot, np.nan)
    for start in range(0, n_boot, rows):
        k = min(rows, n_boot - start)
        out[start : start + k] = _reduce(statistic, x[rng.integers(0, n, size=(k, n))])
    return out


def _jackknife(x: np.ndarray, statistic: Callable[..., float]) -> np.ndarray:
    """statistic of x with each value left out in turn."""
    n = x.size
    base = np.arange(n - 1)
    rows = max(1, _BLOCK // (n - 1))
    out = np.full(n, np.nan)
    for start in range(0, n, rows):
        left_out = np.arange(start, min(n, start + rows))[:, None]
        out[start : start + left_out.shape[0]] = _reduce(statistic, x[base + (base >= left_out)])
    return out


def _bca_quantiles(
    x: np.ndarray, statistic: Callable[..., float], theta: float, boot: np.ndarray, alpha: float
) -> np.ndarray:
    """BCa's adjusted quantile levels (Efron & Tibshirani 1993, eq. 14.10, 14.14, 14.15)."""
    below = (np.count_nonzero(boot < theta) + 0.5 * np.count_nonzero(boot == theta)) / boot.size
    if not 0.0 < below < 1.0:
        raise ConfigError(
            "BCa is undefined here: the statistic of the data lies outside every bootstrap replicate "
            "(a value no resample can reach, such as a count of distinct values). Use method='percentile'."
        )
    z0 = special.ndtri(below)
    jk = _jackknife(x, statistic)
    d = jk.mean() - jk
    ss = float(np.sum(d**2))
    accel = float(np.sum(d**3)) / (6.0 * ss**1.5) if ss > 0.0 else 0.0
    z = special.ndtri(np.array([alpha, 1.0 - alpha]))
    return special.ndtr(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))


def _floor(noise_floor: Estimate | float | None) -> float | None:
    if noise_floor is None:
        return None
    if isinstance(noise_floor, Estimate):
        return max(abs(noise_floor.lo), abs(noise_floor.hi))
    try:
        floor = float(noise_floor)
    except (TypeError, ValueError):
        floor = math.nan
    if not (math.isfinite(floor) and floor >= 0.0):
        raise ConfigError(
            f"noise_floor must be None, an Estimate or a finite magnitude >= 0, got {noise_floor!r}; "
            "measure it between two same-distribution runs (see noise_floor())."
        )
    return floor


def _decimals(half: float) -> int | None:
    """Decimals that show `half` with two significant digits (None when it is 0 or not finite)."""
    if not (math.isfinite(half) and half > 0.0):
        return None
    return min(12, max(0, 1 - int(f"{half:.1e}".split("e")[1])))


def _fmt(x: float, decimals: int | None) -> str:
    return f"{x:.4g}" if decimals is None else f"{x:.{decimals}f}"
