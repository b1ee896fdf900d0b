"""Shared statistics: intervals agree with scipy and with hand values, cover at their nominal level
over simulated samples, pairing removes shared variance, widths shrink like 1/sqrt(n), verdicts
follow the rule, and bad input is refused with a message that says what to do."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from methods.errors import ConfigError
from methods.metrics import stats
from methods.metrics.stats import (
    Estimate,
    Verdict,
    bootstrap_ci,
    claim_line,
    compare,
    mean_ci,
    noise_floor,
    paired_difference,
    seed_spread,
    unpaired_difference,
)

TRIALS = 400
# three binomial standard deviations of an empirical coverage over TRIALS intervals at 95%
COVERAGE_TOL = 3 * math.sqrt(0.95 * 0.05 / TRIALS)


def _coverage(make_interval, sampler, truth: float, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(TRIALS):
        est = make_interval(sampler(rng))
        hits += est.lo <= truth <= est.hi
    return hits / TRIALS


# --------------------------------------------------------------------------- t-interval


def test_t_interval_by_hand_and_against_scipy() -> None:
    x = [1.0, 2.0, 3.0, 4.0]
    est = mean_ci(x)
    # mean 2.5, s = sqrt(5/3), t_{0.975,3} = 3.182446305...
    half = 3.182446305284263 * math.sqrt(5.0 / 3.0) / 2.0
    assert (est.value, est.n, est.level, est.method) == (2.5, 4, 0.95, "t")
    assert est.lo == pytest.approx(2.5 - half, rel=1e-12)
    assert est.hi == pytest.approx(2.5 + half, rel=1e-12)
    for level in (0.8, 0.95, 0.99):
        est = mean_ci([3.2, 2.9, 3.7, 3.1, 4.0], level=level)
        lo, hi = sps.t.interval(
            level, 4, loc=np.mean(est_x := [3.2, 2.9, 3.7, 3.1, 4.0]), scale=sps.sem(est_x)
        )
        assert (est.lo, est.hi, est.level) == (
            pytest.approx(lo, rel=1e-12),
            pytest.approx(hi, rel=1e-12),
            level,
        )


def test_t_interval_of_identical_values_is_a_point() -> None:
    est = mean_ci([0.7, 0.7, 0.7])
    assert (est.value, est.lo, est.hi) == (pytest.approx(0.7),) * 3


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_t_interval_covers_at_its_level_with_five_seeds(level: float) -> None:
    # a z-interval (1.96 instead of t_{0.975,4} = 2.776) would cover only ~0.88 here
    tol = 3 * math.sqrt(level * (1 - level) / TRIALS)
    cov = _coverage(lambda v: mean_ci(v, level=level), lambda r: r.normal(1.0, 2.0, size=5), 1.0)
    assert abs(cov - level) < tol, cov


def test_ci_shrinks_like_one_over_sqrt_n() -> None:
    x = np.random.default_rng(3).normal(size=100)
    big = np.tile(x, 4)  # same spread, four times the units
    ratio_t = mean_ci(x).half_width / mean_ci(big).half_width
    # exact up to the t quantile and ddof: 2 * t(99)/t(399) * sqrt(399/396)
    expected = 2 * sps.t.ppf(0.975, 99) / sps.t.ppf(0.975, 399) * math.sqrt(399 / 396)
    assert ratio_t == pytest.approx(expected, rel=1e-9)
    ratio_boot = bootstrap_ci(x).half_width / bootstrap_ci(big).half_width
    assert ratio_boot == pytest.approx(2.0, rel=0.1)


# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_covers_at_95_percent(method: str) -> None:
    cov = _coverage(
        lambda v: bootstrap_ci(v, n_boot=1000, method=method, seed=1),
        lambda r: r.normal(5.0, 1.0, size=100),  # percentile/BCa are first-order: ~0.945 at n=100
        5.0,
        seed=3,
    )
    assert abs(cov - 0.95) < COVERAGE_TOL, cov


@pytest.mark.parametrize("level", [0.9, 0.95])
@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("statistic", [np.mean, np.median])
def test_bootstrap_matches_scipy(method: str, level: float, statistic) -> None:
    x = np.random.default_rng(7).exponential(size=40)  # skewed: BCa and percentile differ
    ours = bootstrap_ci(x, statistic, n_boot=40_000, level=level, method=method)
    ref = sps.bootstrap(
        (x,),
        statistic,
        n_resamples=40_000,
        confidence_level=level,
        method="BCa" if method == "bca" else method,
        rng=0,
    ).confidence_interval
    width = ref.high - ref.low
    assert ours.lo == pytest.approx(ref.low, abs=0.02 * width)
    assert ours.hi == pytest.approx(ref.high, abs=0.02 * width)
    assert ours.value == statistic(x) and ours.n == 40 and ours.level == level


def test_bca_shifts_towards_the_long_tail() -> None:
    x = np.random.default_rng(7).exponential(size=40)
    pct = bootstrap_ci(x, n_boot=20_000)
    bca = bootstrap_ci(x, n_boot=20_000, method="bca")
    assert (pct.method, bca.method) == ("percentile bootstrap", "BCa bootstrap")
    assert bca.lo > pct.lo + 0.015 and bca.hi > pct.hi + 0.025  # measured: +0.024, +0.038


def test_bootstrap_works_down_to_two_values() -> None:
    for method in ("percentile", "bca"):
        est = bootstrap_ci([1.0, 3.0], method=method)
        assert (est.value, est.lo, est.hi, est.n) == (2.0, 1.0, 3.0, 2)


def test_bootstrap_of_constant_values_is_a_point_for_both_methods() -> None:
    for method in ("percentile", "bca"):
        est = bootstrap_ci([2.0] * 6, method=method)
        assert (est.value, est.lo, est.hi) == (2.0, 2.0, 2.0)


def test_bootstrap_is_deterministic_by_seed_and_ignores_global_state() -> None:
    x = np.random.default_rng(0).normal(size=30)
    np.random.seed(1)
    a = bootstrap_ci(x, seed=5)
    np.random.seed(2)
    b = bootstrap_ci(x, seed=5)
    assert a == b
    c = bootstrap_ci(x, seed=6)
    assert (c.lo, c.hi) != (a.lo, a.hi) and c.value == a.value


def test_statistic_without_axis_gives_the_same_interval_as_the_vectorised_one() -> None:
    x = np.random.default_rng(1).normal(size=25)
    for method in ("percentile", "bca"):
        fast = bootstrap_ci(x, np.median, seed=3, method=method)
        slow = bootstrap_ci(x, lambda v: float(np.median(v)), seed=3, method=method)
        assert fast == slow
    # a statistic that accepts axis but ignores it is detected and applied per resample
    loose = bootstrap_ci(x, lambda v, axis=None: float(np.mean(v)), seed=3)
    assert loose == bootstrap_ci(x, np.mean, seed=3)


class _CountingMean:
    """np.mean that counts its calls, to see that resamples are reduced in one call per block."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, v, axis=None):
        self.calls += 1
        return np.mean(v, axis=axis)


@pytest.mark.parametrize(("method", "calls"), [("percentile", 2), ("bca", 3)])
def test_a_statistic_that_takes_axis_is_applied_once_per_block(method: str, calls: int) -> None:
    x = np.random.default_rng(1).normal(size=25)
    stat = _CountingMean()
    est = bootstrap_ci(x, stat, n_boot=1000, seed=3, method=method)
    assert stat.calls == calls  # the data, all resamples (one block), and the jackknife for BCa
    assert est == bootstrap_ci(x, np.mean, n_boot=1000, seed=3, method=method)


def test_defaults_are_2000_resamples_seed_0_and_95_percent() -> None:
    x = np.random.default_rng(8).normal(size=15)
    y = x + np.random.default_rng(9).normal(size=15)
    assert bootstrap_ci(x) == bootstrap_ci(x, np.mean, n_boot=2000, level=0.95, seed=0, method="percentile")
    assert paired_difference(x, y, method="bootstrap") == paired_difference(
        x, y, method="bootstrap", n_boot=2000, level=0.95, seed=0
    )
    assert unpaired_difference(x, y, method="bootstrap") == unpaired_difference(
        x, y, method="bootstrap", n_boot=2000, level=0.95, seed=0
    )
    assert mean_ci(x) == mean_ci(x, 0.95) and paired_difference(x, y) == paired_difference(x, y, method="t")


def test_bca_quantile_levels_by_hand() -> None:
    # for the mean the jackknife acceleration is skew(x) / (6 sqrt(n)) exactly (biased skewness)
    x = np.random.default_rng(11).lognormal(0.0, 1.0, size=15)
    boot = stats._resampled(x, np.mean, 4000, np.random.default_rng(0))
    theta = float(x.mean())
    z0 = sps.norm.ppf((np.sum(boot < theta) + 0.5 * np.sum(boot == theta)) / boot.size)
    a = sps.skew(x) / (6 * math.sqrt(x.size))
    assert a > 0.04  # a skewed sample, so a wrong acceleration shows
    z = sps.norm.ppf([0.05, 0.95])
    expected = sps.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    assert stats._bca_quantiles(x, np.mean, theta, boot, 0.05) == pytest.approx(expected, rel=1e-10)
    # zero jackknife spread (the median of [1, 5, 5, 5, 9] leaves 5 whatever is left out): a = 0
    y = np.array([1.0, 5.0, 5.0, 5.0, 9.0])
    boot = stats._resampled(y, np.median, 2000, np.random.default_rng(0))
    z0 = sps.norm.ppf((np.sum(boot < 5.0) + 0.5 * np.sum(boot == 5.0)) / boot.size)
    expected = sps.norm.cdf(z0 + (z0 + z))
    assert stats._bca_quantiles(y, np.median, 5.0, boot, 0.05) == pytest.approx(expected, rel=1e-10)


def test_resampling_in_blocks_fills_every_replicate(monkeypatch) -> None:
    monkeypatch.setattr(stats, "_BLOCK", 64)  # 3 resamples of 20 per block
    x = np.random.default_rng(2).normal(size=20)
    boot = stats._resampled(x, np.mean, 1000, np.random.default_rng(0))
    assert boot.shape == (1000,) and x.min() <= boot.min() and boot.max() <= x.max()
    assert boot.std() == pytest.approx(x.std() / math.sqrt(20), rel=0.1)
    jk = stats._jackknife(x, np.mean)
    assert jk == pytest.approx((x.sum() - x) / 19, rel=1e-12)


def test_jackknife_and_resampling_with_default_blocks_on_long_input() -> None:
    x = np.random.default_rng(4).normal(size=3000)  # several blocks of the default size
    jk = stats._jackknife(x, np.mean)
    assert jk == pytest.approx((x.sum() - x) / 2999, rel=1e-12)
    est = bootstrap_ci(x, n_boot=1000, method="bca")
    t = mean_ci(x)
    assert est.lo == pytest.approx(t.lo, abs=0.1 * t.half_width)
    assert est.hi == pytest.approx(t.hi, abs=0.1 * t.half_width)


# --------------------------------------------------------------------------- differences


def _correlated_pairs(seed: int = 0, n: int = 10):
    rng = np.random.default_rng(seed)
    unit = rng.normal(0.0, 5.0, size=n)  # a large per-seed effect both arms share
    return unit + rng.normal(0.0, 0.2, size=n) + 0.5, unit + rng.normal(0.0, 0.2, size=n)


def test_paired_ci_is_narrower_than_unpaired_when_units_are_correlated() -> None:
    a, b = _correlated_pairs()
    paired = paired_difference(a, b)
    unpaired = unpaired_difference(a, b)
    assert paired.value == pytest.approx(unpaired.value)
    assert paired.half_width < 0.1 * unpaired.half_width
    assert compare(paired) == "supported" and compare(unpaired) == "not distinguishable"
    boot_p = paired_difference(a, b, method="bootstrap")
    boot_u = unpaired_difference(a, b, method="bootstrap")
    assert boot_p.half_width < 0.1 * boot_u.half_width


def test_paired_difference_agrees_with_scipy_and_with_bootstrap_of_differences() -> None:
    a, b = _correlated_pairs(seed=1, n=12)
    ref = sps.ttest_rel(a, b).confidence_interval(0.9)
    est = paired_difference(a, b, level=0.9)
    assert (est.lo, est.hi) == (pytest.approx(ref.low, rel=1e-12), pytest.approx(ref.high, rel=1e-12))
    assert (est.value, est.n, est.level, est.method) == (pytest.approx(np.mean(a - b)), 12, 0.9, "paired t")
    for method, kind, label in (
        ("bootstrap", "percentile", "percentile bootstrap"),
        ("bca", "bca", "BCa bootstrap"),
    ):
        est = paired_difference(a, b, method=method, level=0.9, n_boot=500, seed=3)
        ref = bootstrap_ci(a - b, level=0.9, n_boot=500, seed=3, method=kind)
        assert (est.value, est.lo, est.hi, est.n, est.level) == (ref.value, ref.lo, ref.hi, 12, 0.9)
        assert est.method == f"paired {label}"


def test_paired_ci_covers_at_95_percent() -> None:
    def sample(r):
        unit = r.normal(0.0, 3.0, size=6)
        return unit + r.normal(1.0, 1.0, size=6), unit + r.normal(0.0, 1.0, size=6)

    cov = _coverage(lambda ab: paired_difference(*ab), sample, 1.0, seed=2)
    assert abs(cov - 0.95) < COVERAGE_TOL, cov


def test_welch_interval_agrees_with_scipy_for_unequal_sizes_and_spreads() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(1.0, 0.5, size=5), rng.normal(0.0, 2.0, size=12)
    for level in (0.9, 0.95):
        ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(level)
        est = unpaired_difference(a, b, level=level)
        assert (est.lo, est.hi) == (pytest.approx(ref.low, rel=1e-12), pytest.approx(ref.high, rel=1e-12))
        assert (est.value, est.n, est.level, est.method) == (
            pytest.approx(a.mean() - b.mean()),
            17,
            level,
            "welch t",
        )
    ref = sps.ttest_ind(b, a, equal_var=False).confidence_interval()
    est = unpaired_difference(b, a)
    assert (est.lo, est.hi) == (pytest.approx(ref.low, rel=1e-12), pytest.approx(ref.high, rel=1e-12))


def test_unpaired_of_constant_groups_is_a_point_and_bootstrap_agrees_with_welch() -> None:
    est = unpaired_difference([1.0, 1.0, 1.0], [0.0, 0.0])
    assert (est.value, est.lo, est.hi, est.n, est.method) == (1.0, 1.0, 1.0, 5, "welch t")
    rng = np.random.default_rng(6)
    a, b = rng.normal(0.0, 1.0, size=300), rng.normal(0.3, 2.0, size=200)
    welch = unpaired_difference(a, b, level=0.9)
    boot = unpaired_difference(a, b, method="bootstrap", level=0.9, n_boot=4000, seed=1)
    assert boot.method == "unpaired percentile bootstrap" and (boot.n, boot.level) == (500, 0.9)
    assert boot.value == welch.value
    assert boot.lo == pytest.approx(welch.lo, abs=0.05 * welch.half_width)
    assert boot.hi == pytest.approx(welch.hi, abs=0.05 * welch.half_width)
    assert boot == unpaired_difference(a, b, method="bootstrap", level=0.9, n_boot=4000, seed=1)
    assert boot != unpaired_difference(a, b, method="bootstrap", level=0.9, n_boot=4000, seed=2)
    assert unpaired_difference(a, b, method="bootstrap", n_boot=100).n == 500


def test_seed_spread() -> None:
    s = seed_spread([1.0, 2.0, 3.0, 4.0])
    assert s == {"mean": 2.5, "std": pytest.approx(math.sqrt(5 / 3)), "min": 1.0, "max": 4.0, "n": 4}
    assert seed_spread([1.0, 3.0])["std"] == pytest.approx(math.sqrt(2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "degrees of freedom <= 0" RuntimeWarning in bench output
        one = seed_spread([0.25])
    assert (one["mean"], one["min"], one["max"], one["n"]) == (0.25, 0.25, 0.25, 1) and math.isnan(one["std"])


def test_noise_floor_is_the_t_interval_of_absolute_null_effects() -> None:
    floor = noise_floor([-1.0, 1.0, 2.0])
    ref = mean_ci([1.0, 1.0, 2.0])
    assert (floor.value, floor.lo, floor.hi, floor.n) == (ref.value, ref.lo, ref.hi, 3)
    assert floor.method == "noise floor, t of |null|"
    assert noise_floor([-1.0, 1.0, 2.0], level=0.8).hi == pytest.approx(mean_ci([1.0, 1.0, 2.0], 0.8).hi)


# --------------------------------------------------------------------------- Estimate and verdicts


def test_estimate_text_fields_and_helpers() -> None:
    est = Estimate(0.123, 0.113, 0.133, 3)
    assert str(est) == "0.123 ± 0.010 [0.113, 0.133] (n=3)"
    assert est.half_width == pytest.approx(0.010)
    assert est.as_fields("fd") == {"fd": 0.123, "fd_lo": 0.113, "fd_hi": 0.133, "fd_n": 3}
    assert str(Estimate(-3.1, -4.3, -1.9, 3)) == "-3.1 ± 1.2 [-4.3, -1.9] (n=3)"
    assert str(Estimate(1234.0, 1177.0, 1291.0, 5)) == "1234 ± 57 [1177, 1291] (n=5)"
    assert str(Estimate(0.5, 0.4, 0.6, 5, 0.9)) == "0.50 ± 0.10 [0.40, 0.60] (n=5, 90%)"
    # a half-width of 0.0999 rounds to 0.10 (two significant digits), not 0.0999
    assert str(Estimate(0.5, 0.4001, 0.59991, 5)) == "0.50 ± 0.10 [0.40, 0.60] (n=5)"
    assert str(Estimate(0.5, 0.45, 0.5999, 5)) == "0.500 ± 0.075 [0.450, 0.600] (n=5)"
    assert str(Estimate(2.0, 2.0, 2.0, 3)) == "2 ± 0 [2, 2] (n=3)"
    assert str(Estimate(math.nan, math.nan, math.nan, 3)) == "nan ± nan [nan, nan] (n=3)"
    assert (
        str(Estimate(1e-20, 0.0, 2e-20, 3))
        == "0.000000000000 ± 0.000000000000 [0.000000000000, 0.000000000000] (n=3)"
    )
    e = Estimate(np.float64(1), np.int64(0), 2, np.int64(4), np.float32(0.5))
    assert type(e.value) is float and type(e.lo) is float and type(e.hi) is float
    assert type(e.n) is int and type(e.level) is float and e.level == 0.5


def test_excludes_is_strict_on_both_sides() -> None:
    est = Estimate(1.0, 0.0, 2.0, 3)
    assert not est.excludes(0.0) and not est.excludes(2.0) and not est.excludes()
    assert est.excludes(-1e-9) and est.excludes(2.0 + 1e-9)
    assert Estimate(1.0, 0.5, 2.0, 3).excludes() and Estimate(-1.0, -2.0, -0.5, 3).excludes()


@pytest.mark.parametrize(
    ("effect", "floor", "verdict"),
    [
        (Estimate(0.2, -0.1, 0.5, 3), None, "not distinguishable"),  # straddles 0
        (Estimate(1.0, 0.0, 2.0, 3), None, "not distinguishable"),  # touches 0
        (Estimate(-1.0, -2.0, 0.0, 3), None, "not distinguishable"),
        (Estimate(1.0, 1e-9, 2.0, 3), None, "supported"),
        (Estimate(-1.0, -2.0, -1e-9, 3), None, "supported"),
        (Estimate(2.0, 1.0, 3.0, 3), 2.0, "not distinguishable"),  # inside the floor (equal)
        (Estimate(2.0, 1.0, 3.0, 3), 1.999, "supported"),
        (Estimate(2.0, 1.0, 3.0, 3), 0.0, "supported"),
        (Estimate(-3.1, -4.3, -1.9, 3), 3.2, "not distinguishable"),  # negative effect, |.| vs floor
        (Estimate(-3.1, -4.3, -1.9, 3), 3.0, "supported"),
        (Estimate(0.2, -0.1, 0.5, 3), 0.0, "not distinguishable"),  # the floor cannot rescue a CI over 0
        (
            Estimate(2.4, 2.0, 2.8, 3),
            Estimate(1.0, 0.5, 2.5, 3),
            "not distinguishable",
        ),  # floor's upper bound
        (Estimate(2.6, 2.0, 3.2, 3), Estimate(1.0, 0.5, 2.5, 3), "supported"),
        (Estimate(2.9, 2.0, 3.8, 3), Estimate(-1.0, -3.0, 0.5, 3), "not distinguishable"),  # |lo| is larger
        (Estimate(3.1, 2.0, 4.2, 3), Estimate(-1.0, -3.0, 0.5, 3), "supported"),
        (Estimate(math.nan, math.nan, math.nan, 3), None, "not distinguishable"),
        (Estimate(2.0, 1.0, 3.0, 3), Estimate(math.nan, math.nan, math.nan, 3), "not distinguishable"),
    ],
)
def test_compare(effect: Estimate, floor, verdict: str) -> None:
    got = compare(effect, floor)
    assert got == verdict and isinstance(got, Verdict) and str(got) == verdict and f"{got}" == verdict


def test_claim_lines() -> None:
    effect = Estimate(-3.1, -4.3, -1.9, 3)
    assert (
        claim_line("fd_gain", effect, 2.0)
        == "fd_gain: -3.1 ± 1.2 [-4.3, -1.9] (n=3) noise floor 2.0 -> supported"
    )
    assert claim_line("fd_gain", effect) == "fd_gain: -3.1 ± 1.2 [-4.3, -1.9] (n=3) -> supported"
    floor = Estimate(3.0, 2.0, 4.04, 3)
    assert (
        claim_line("fd_gain", effect, floor)
        == "fd_gain: -3.1 ± 1.2 [-4.3, -1.9] (n=3) noise floor 4.0 -> not distinguishable"
    )
    assert (
        claim_line("x", Estimate(0.0, 0.0, 0.0, 2), 1.0)
        == "x: 0 ± 0 [0, 0] (n=2) noise floor 1 -> not distinguishable"
    )


def test_end_to_end_a_bench_claim_over_three_seeds() -> None:
    fp = [10.0, 11.0, 10.5]
    quant = [13.0, 14.2, 13.4]
    floor = noise_floor([0.3, 0.5, 0.4])  # FP-vs-FP FD per seed
    gain = paired_difference(fp, quant)
    assert compare(gain, floor) == "supported"
    assert claim_line("fd_gain", gain, floor).endswith("noise floor 0.65 -> supported")
    assert gain.as_fields("fd_gain")["fd_gain_n"] == 3


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([1.0], r"at least 2 values .*got 1\. Run more seeds"),
        ([], r"at least 2 values .*got 0"),
        (
            [1.0, math.nan, 2.0],
            r"must all be finite, got 1 non-finite of 3 \(index 1: nan\)\. Fix the metric",
        ),
        ([1.0, 2.0, math.inf, -math.inf], r"got 2 non-finite of 4 \(index 2: inf\)"),
        (
            [[1.0, 2.0], [3.0, 4.0]],
            r"must be 1-D \(one value per seed or sample\), got shape \(2, 2\); pass one metric at a time\.$",
        ),
        (3.0, r"must be 1-D .*got shape \(\)"),
        (["a", "b"], r"values must be a 1-D sequence of numbers, got list"),
        ([1 + 2j, 3.0], r"must be a 1-D sequence of numbers"),
    ],
)
def test_bad_values_are_refused(values, match: str) -> None:
    for fn in (mean_ci, bootstrap_ci):
        with pytest.raises(ConfigError, match=match):
            fn(values)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5, 95, math.nan, "high", None])
def test_bad_levels_are_refused(level) -> None:
    match = r"level must be a confidence level strictly between 0 and 1, got .*; write 0\.95 for 95%"
    calls = (
        lambda: mean_ci([1.0, 2.0], level=level),
        lambda: bootstrap_ci([1.0, 2.0], level=level),
        lambda: paired_difference([1.0, 2.0], [0.0, 1.0], level=level),
        lambda: unpaired_difference([1.0, 2.0], [0.0, 1.0], level=level),
        lambda: Estimate(1.0, 0.0, 2.0, 3, level),
    )
    for call in calls:
        with pytest.raises(ConfigError, match=match):
            call()


def test_other_bad_input_is_refused() -> None:
    x = [1.0, 2.0, 3.0]
    for n_boot in (99, 2.5, True, -1, "2000"):
        with pytest.raises(
            ConfigError,
            match=r"n_boot must be an integer number of resamples >= 100, got .*; 2000 is a good default, "
            r"10000 for BCa or tail levels\.$",
        ):
            bootstrap_ci(x, n_boot=n_boot)
    assert bootstrap_ci(x, n_boot=100).n == 3 and bootstrap_ci(x, n_boot=np.int64(100)).n == 3
    with pytest.raises(ConfigError, match=r"n_boot must be"):
        unpaired_difference(x, x, method="bootstrap", n_boot=10)
    with pytest.raises(
        ConfigError, match=r"bootstrap_ci method must be one of percentile, bca, got 'bcaa'\. Did you"
    ):
        bootstrap_ci(x, method="bcaa")
    with pytest.raises(
        ConfigError, match=r"paired_difference method must be one of t, bootstrap, bca, got 'welch'"
    ):
        paired_difference(x, x, method="welch")
    with pytest.raises(
        ConfigError, match=r"unpaired_difference method must be one of t, bootstrap, got 'bca'"
    ):
        unpaired_difference(x, x, method="bca")
    with pytest.raises(
        ConfigError,
        match=r"one value of a and one of b per unit.*got 3 values in a and 2 in b\. "
        r"Align them by seed/sample id, or use unpaired_difference for independent groups\.$",
    ):
        paired_difference(x, [1.0, 2.0])
    with pytest.raises(ConfigError, match=r"^b needs at least 2 values"):
        paired_difference(x, [1.0])
    with pytest.raises(ConfigError, match=r"^a needs at least 2 values"):
        paired_difference([1.0], x)
    with pytest.raises(ConfigError, match=r"^b needs at least 2 values"):
        unpaired_difference(x, [1.0])
    with pytest.raises(ConfigError, match=r"^a must all be finite"):
        unpaired_difference([1.0, math.nan], x)
    with pytest.raises(ConfigError, match=r"^null_effects needs at least 2"):
        noise_floor([0.1])
    with pytest.raises(ConfigError, match=r"values needs at least 1 values"):
        seed_spread([])


def test_bad_statistics_and_undefined_bca_are_refused() -> None:
    x = [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(
        ConfigError, match=r"statistic of the data must be finite, got nan; check the statistic"
    ):
        bootstrap_ci(x, lambda v: math.nan)
    with pytest.raises(ConfigError, match=r"statistic must map a 1-D array to one number; calling it failed"):
        bootstrap_ci(x, lambda v: v * 2)
    undefined = (
        r"^BCa is undefined here: the statistic of the data lies outside every bootstrap replicate "
        r"\(a value no resample can reach, such as a count of distinct values\)\. Use method='percentile'\.$"
    )
    with pytest.raises(ConfigError, match=undefined):
        bootstrap_ci(np.arange(20.0), lambda v: len(np.unique(v)), method="bca")  # no resample has 20
    with pytest.raises(ConfigError, match=undefined):
        bootstrap_ci(np.arange(20.0), lambda v: -len(np.unique(v)), method="bca")  # below every one
    assert bootstrap_ci(x, np.max, method="bca").hi == 4.0  # ties at the maximum count as half


def test_bad_estimates_and_floors_are_refused() -> None:
    with pytest.raises(
        ConfigError,
        match=r"lo <= hi, got lo=2\.0 > hi=1\.0; swap them or check how the interval was computed\.$",
    ):
        Estimate(1.5, 2.0, 1.0, 3)
    for n in (0, -1, 1.5, True, None, "3"):
        with pytest.raises(ConfigError, match=r"Estimate\.n must be a positive count of units, got"):
            Estimate(1.0, 0.0, 2.0, n)
    assert Estimate(1.0, 1.0, 1.0, 1).n == 1
    for floor in (-0.1, math.nan, math.inf, "wide", [1.0]):
        with pytest.raises(
            ConfigError,
            match=r"noise_floor must be None, an Estimate or a finite magnitude >= 0, got .*; "
            r"measure it between two same-distribution runs \(see noise_floor\(\)\)\.$",
        ):
            compare(Estimate(1.0, 0.5, 1.5, 3), floor)
    with pytest.raises(ConfigError, match=r"compare needs an Estimate .*got float\. Wrap the numbers"):
        compare(0.3)
    with pytest.raises(ConfigError, match=r"compare needs an Estimate"):
        claim_line("x", (0.1, 0.0, 0.2))


def test_errors_are_value_errors() -> None:
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError):
        mean_ci([1.0])


def test_spread_floor_is_the_noise_floor_of_every_pair_of_seeds():
    from methods.metrics.stats import noise_floor, spread_floor

    x = [0.90, 0.93, 0.97]
    got, want = spread_floor(x), noise_floor([0.03, 0.07, 0.04])
    assert (got.value, got.lo, got.hi, got.n) == pytest.approx((want.value, want.lo, want.hi, want.n))
    assert spread_floor([1.0, 1.0, 1.0]).hi == 0.0
    assert spread_floor([0.9, 0.95]) is None  # one pair: no interval
    with pytest.raises(ConfigError):
        spread_floor([1.0])


# --------------------------------------------------------------------------- over draws


def test_over_draws_with_identical_draws_is_the_jackknife_of_the_shared_units() -> None:
    from methods.metrics.stats import grouped_jackknife_ci, over_draws_ci

    x = np.random.default_rng(3).normal(size=(200, 1))
    est, draws = over_draws_ci(x, lambda r: np.full(3, r.mean()), groups=10)
    jack = grouped_jackknife_ci(x, lambda r: r.mean(), groups=10)
    assert draws.tolist() == pytest.approx([x.mean()] * 3)
    assert (est.value, est.lo, est.hi) == pytest.approx((jack.value, jack.lo, jack.hi))
    assert est.n == 3


def test_over_draws_covers_when_draws_vary_and_the_jackknife_alone_does_not() -> None:
    """Units shared by every draw (evaluation samples, sd 1 each) plus a per-draw offset (calibration,
    sd 0.2): the mean over 3 draws has SE^2 = 1/n + 0.04/3. The combined interval covers the truth at
    ~95 % (Satterthwaite's df is slightly liberal at 3 draws: 0.92-0.95 in 2,000-run simulations over
    offset sds 0-1); the jackknife over units alone (the bug of ignoring the draws) covers ~80 %."""
    from methods.metrics.stats import grouped_jackknife_ci, over_draws_ci

    n, s = 100, 3
    both = jack_only = 0
    rng = np.random.default_rng(0)
    for _ in range(TRIALS):
        units = rng.normal(size=(n, 1))
        offsets = 0.2 * rng.normal(size=s)
        est, draws = over_draws_ci(units, lambda r, o=offsets: r.mean() + o, groups=20)
        both += est.lo <= 0.0 <= est.hi
        j = grouped_jackknife_ci(units, lambda r, o=offsets: float(r.mean() + o.mean()), groups=20)
        jack_only += j.lo <= 0.0 <= j.hi
    assert both / TRIALS >= 0.95 - COVERAGE_TOL - 0.03
    assert jack_only / TRIALS < 0.86


def test_over_draws_refuses_one_draw() -> None:
    from methods.metrics.stats import over_draws_ci

    with pytest.raises(ConfigError, match="at least 2 draws"):
        over_draws_ci(np.ones((10, 1)), lambda r: np.array([r.mean()]))
