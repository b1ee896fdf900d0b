"""Fréchet distance maths: zero for identical sets, the 1-D closed form, symmetry, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from methods.errors import ConfigError
from methods.metrics.frechet import frechet_distance, frechet_distance_from_features, gaussian_stats


def test_identical_feature_sets_have_zero_distance():
    feats = np.random.default_rng(0).normal(size=(200, 8))
    assert frechet_distance_from_features(feats, feats) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize(
    ("m1", "s1", "m2", "s2"), [(0.0, 1.0, 0.0, 1.0), (1.0, 2.0, -0.5, 0.5), (3.0, 0.1, 3.0, 4.0)]
)
def test_one_dimensional_closed_form(m1, s1, m2, s2):
    # For 1-D Gaussians: d² = (m1 − m2)² + (s1 − s2)² with s the standard deviations.
    got = frechet_distance(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]]))
    assert got == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-9, abs=1e-12)


def test_diagonal_closed_form_and_symmetry():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.1, 3, size=5), rng.uniform(0.1, 3, size=5)
    expected = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    ab = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    ba = frechet_distance(mu2, np.diag(v2), mu1, np.diag(v1))
    assert ab == pytest.approx(expected, rel=1e-9)
    assert ab == pytest.approx(ba, rel=1e-9)


def test_symmetric_on_full_covariance_samples():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(250, 6)) @ rng.normal(size=(6, 6)) + 0.5
    ab, ba = frechet_distance_from_features(a, b), frechet_distance_from_features(b, a)
    assert ab == pytest.approx(ba, rel=1e-6)
    assert frechet_distance_from_features(a, b) > 0.1


def test_shifted_mean_adds_squared_shift():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(500, 4))
    shift = np.array([1.0, -2.0, 0.0, 0.5])
    assert frechet_distance_from_features(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_singular_covariance_is_finite():
    # Fewer samples than dimensions, and a dead (constant) feature: the eps retry must give a number.
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(5, 16)), rng.normal(size=(5, 16))
    a[:, 0] = b[:, 0] = 0.0
    value = frechet_distance_from_features(a, b)
    assert np.isfinite(value) and value >= 0.0


def test_gaussian_stats_and_bad_input():
    mu, cov = gaussian_stats(np.array([[0.0, 1.0], [2.0, 3.0]]))
    np.testing.assert_allclose(mu, [1.0, 2.0])
    np.testing.assert_allclose(cov, [[2.0, 2.0], [2.0, 2.0]])
    with pytest.raises(ConfigError, match="N ≥ 2"):
        gaussian_stats(np.zeros((1, 3)))
    with pytest.raises(ConfigError, match="NaN"):
        gaussian_stats(np.array([[0.0], [np.nan]]))
    with pytest.raises(ConfigError, match="dimension"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def _clouds(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(2000, d))
    a = rng.normal(size=(n, d)) + 0.3  # a shifted generator
    return gaussian_stats(real), a


def test_fd_ci_brackets_the_plug_in_fd_and_shrinks_with_more_samples():
    from methods.metrics.frechet import fd_ci

    real, a = _clouds(n=1600)
    big = fd_ci(a, real, groups=20)
    small = fd_ci(a[:200], real, groups=20)
    assert big.value == pytest.approx(frechet_distance(*gaussian_stats(a), *real))
    assert big.lo < big.value < big.hi and big.n == 1600
    assert big.half_width < small.half_width  # 8x the samples: a narrower interval


def test_paired_fd_difference_is_the_difference_and_pairing_cancels_shared_noise():
    from methods.metrics.frechet import fd_ci, paired_fd_difference

    real, a = _clouds()
    rng = np.random.default_rng(1)
    b = a + 0.05 * rng.normal(size=a.shape) + 0.02  # the same units, slightly changed
    est = paired_fd_difference(a, b, real, groups=20)
    fd_a = frechet_distance(*gaussian_stats(a), *real)
    fd_b = frechet_distance(*gaussian_stats(b), *real)
    assert est.value == pytest.approx(fd_a - fd_b)
    unpaired_half = fd_ci(a, real).half_width + fd_ci(b, real).half_width
    assert est.half_width < 0.2 * unpaired_half  # a shuffled pairing would not cancel the shared part
    same = paired_fd_difference(a, a, real)
    assert same.value == 0.0 and same.lo == 0.0 and same.hi == 0.0
    shuffled = paired_fd_difference(a, b[rng.permutation(len(b))], real, groups=20)
    assert shuffled.half_width > 2 * est.half_width
    with pytest.raises(ConfigError, match="same noise"):
        paired_fd_difference(a, b[:-1], real)


def test_paired_fd_over_draws_is_the_mean_difference_and_widens_with_draw_spread():
    from methods.metrics.frechet import paired_fd_difference, paired_fd_difference_over_draws

    real, a = _clouds()
    rng = np.random.default_rng(2)
    b = a + 0.05 * rng.normal(size=a.shape) + 0.02
    one = paired_fd_difference(a, b, real, groups=20)
    same, draws = paired_fd_difference_over_draws([(a, b)] * 3, real, groups=20)
    assert draws == pytest.approx([one.value] * 3)
    assert (same.value, same.lo, same.hi) == pytest.approx((one.value, one.lo, one.hi))
    # draws whose b arms differ (three calibrations): the mean of their differences, a wider interval
    arms = [a + 0.05 * rng.normal(size=a.shape) + shift for shift in (0.0, 0.02, 0.06)]
    est, draws = paired_fd_difference_over_draws([(a, x) for x in arms], real, groups=20)
    singles = [paired_fd_difference(a, x, real, groups=20).value for x in arms]
    assert draws == pytest.approx(singles)
    assert est.value == pytest.approx(np.mean(singles))
    assert est.half_width > one.half_width
    with pytest.raises(ConfigError, match=">= 2"):
        paired_fd_difference_over_draws([(a, b)], real)
    with pytest.raises(ConfigError, match="equal-shape"):
        paired_fd_difference_over_draws([(a, b), (a, b[:-1])], real)
