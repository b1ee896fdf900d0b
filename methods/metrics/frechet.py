"""Fréchet distance between two Gaussians fitted to feature sets (the maths behind FID and digit-FD).

    d² = ||μ₁ − μ₂||² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

Follows "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"
(Heusel et al., arXiv:1706.08500) for the formula, and the numerics of the widely used
pytorch-fid code (`calculate_frechet_distance`): `scipy.linalg.sqrtm` of Σ₁Σ₂; when the product is
near singular (non-finite square root) retry with ε·I added to both covariances; drop an imaginary
part that numerical error leaves behind, but fail when it is large. Our own additions
([inferred]): input validation with typed errors, and clamping the tiny negative values that
round-off can produce to 0; [ours] `fd_ci` and `paired_fd_difference`, FD and paired FD differences
with delete-a-group jackknife intervals over the samples, and `paired_fd_difference_over_draws`, the
mean paired difference over calibration draws with sampling and draw-to-draw variation combined.

Pure NumPy/SciPy; no torch, no file I/O.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

from methods.errors import ConfigError
from methods.metrics.stats import grouped_jackknife_ci, over_draws_ci

EPS = 1e-6
IMAG_ATOL = 1e-3


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D); needs N ≥ 2."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ConfigError(
            f"features must be a 2-D array (N, D) with N ≥ 2 samples, got shape {feats.shape}. "
            f"Pass one feature row per image."
        )
    if not np.isfinite(feats).all():
        raise ConfigError("features contain NaN or inf; check the images and the feature model.")
    return feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False))


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    # A singular product (dead ReLU features have zero variance) is expected and still has a
    # square root; scipy warns about it. Non-finite results are handled by the caller.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = EPS
) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ConfigError(
            f"Gaussian statistics disagree in dimension: mu1 {mu1.shape}, mu2 {mu2.shape}, "
            f"sigma1 {sigma1.shape}, sigma2 {sigma2.shape}; expected (D,) means and (D, D) covariances."
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # Near-singular product (e.g. fewer samples than dimensions): regularise both covariances.
        offset = np.eye(d) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        max_imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if max_imag > IMAG_ATOL:
            raise ConfigError(
                f"sqrtm(Σ₁Σ₂) has an imaginary component of {max_imag:.3g} (> {IMAG_ATOL}); the "
                f"covariances are badly conditioned. Use more samples than feature dimensions."
            )
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # round-off can leave a tiny negative number for identical sets


def frechet_distance_from_features(features_a: np.ndarray, features_b: np.ndarray, eps: float = EPS) -> float:
    """Squared Fréchet distance between Gaussians fitted to two feature sets (N_a, D), (N_b, D)."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b), eps=eps)


def fd_ci(features: np.ndarray, real_stats: tuple[np.ndarray, np.ndarray], groups: int = 20,
          level: float = 0.95, seed: int = 0):
    """FD of `features` (N, D) against fixed real statistics with a delete-a-group jackknife CI over
    the N samples (`methods.metrics.stats.grouped_jackknife_ci`; a bootstrap would duplicate samples
    and shrink the fitted covariance). Returns an `Estimate`."""
    def fd(rows: np.ndarray) -> float:
        return frechet_distance(*gaussian_stats(rows), *real_stats)

    return grouped_jackknife_ci(np.asarray(features, np.float64), fd, groups, level, seed)


def paired_fd_difference(features_a: np.ndarray, features_b: np.ndarray,
                         real_stats: tuple[np.ndarray, np.ndarray], groups: int = 20, level: float = 0.95,
                         seed: int = 0):
    """FD(a) - FD(b) against the same real statistics, where row i of `a` and of `b` come from the
    same unit (the same starting noise): the jackknife deletes the same rows from both arms, so the
    sample-to-sample variation both share cancels [ours]. Returns an `Estimate`."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.shape != b.shape:
        raise ConfigError(f"paired FD needs one feature row per unit in both arms, in the same order; got "
                          f"{a.shape} and {b.shape}. Sample both configurations from the same noise.")
    d = a.shape[1]

    def diff(rows: np.ndarray) -> float:
        return (frechet_distance(*gaussian_stats(rows[:, :d]), *real_stats)
                - frechet_distance(*gaussian_stats(rows[:, d:]), *real_stats))

    return grouped_jackknife_ci(np.concatenate([a, b], axis=1), diff, groups, level, seed)


def paired_fd_difference_over_draws(pairs: list[tuple[np.ndarray, np.ndarray]],
                                    real_stats: tuple[np.ndarray, np.ndarray], groups: int = 20,
                                    level: float = 0.95, seed: int = 0):
    """Mean over S draws (calibration seeds) of FD(a_s) - FD(b_s), every arm sampled from the same
    evaluation noise (row i of every array is the same unit): the jackknife deletes the same rows
    from every arm and draw, and the between-draw spread adds its own t term
    (`methods.metrics.stats.over_draws_ci`) [ours]. Returns (Estimate over the S draws, the S
    per-draw differences)."""
    arrays = [np.asarray(x, np.float64) for pair in pairs for x in pair]
    if len(pairs) < 2 or any(x.shape != arrays[0].shape for x in arrays):
        raise ConfigError(f"paired FD over draws needs >= 2 (a, b) pairs of equal-shape feature arrays (one "
                          f"row per evaluation sample, the same order in all); got {len(pairs)} pairs of "
                          f"shapes {sorted({x.shape for x in arrays})}.")
    d = arrays[0].shape[1]

    def per_draw(rows: np.ndarray) -> np.ndarray:
        out = []
        for s in range(len(pairs)):
            a, b = rows[:, 2 * s * d:(2 * s + 1) * d], rows[:, (2 * s + 1) * d:(2 * s + 2) * d]
            out.append(frechet_distance(*gaussian_stats(a), *real_stats)
                       - frechet_distance(*gaussian_stats(b), *real_stats))
        return np.array(out)

    return over_draws_ci(np.concatenate(arrays, axis=1), per_draw, groups, level, seed)
