"""Fréchet distance between two Gaussians fitted to feature sets (the maths behind FID and digit-FD).

    d² = ||μ₁ − μ₂||² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2})

Follows "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"
(Heusel et al., arXiv:1706.08500) for the formula, and the numerics of the widely used
pytorch-fid code (`calculate_frechet_distance`): `scipy.linalg.sqrtm` of Σ₁Σ₂; when the product is
near singular (non-finite square root) retry with ε·I added to both covariances; drop an imaginary
part that numerical error leaves behind, but fail when it is large. Our own additions
([inferred]): input validation with typed errors, and clamping the tiny negative values that
round-off can produce to 0.

Pure NumPy/SciPy; no torch, no file I/O.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

from methods.errors import ConfigError

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
