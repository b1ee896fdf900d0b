"""Camera image of a laser stripe, as the light-section scanner's sensor records it.

For each measured point the scanner's camera sees a short piece of the laser line crossing a
few image rows. `render_stripes` renders that piece as an (H, W) patch of grey levels:

    I(r, x) = background + A · albedo · S(r, x) · ∫_pixel N(x'; c_r, σ) dx'     (then sensor noise)

- stripe profile: Gaussian across the line, σ = `width_px` [paper: systems.md §5.2 names a
  Gaussian stripe and sub-pixel peak detection]; integrated over each pixel's width (erf
  differences), centre c_r = c + slope·(r − H//2) on row r [inferred];
- speckle S [inferred, after J. W. Goodman, "Speckle Phenomena in Optics", 2007, ch. 3–5]: the
  intensity of a circular complex Gaussian field smoothed over `speckle_grain_px` (fully
  developed, exponential statistics, contrast 1), mixed as 1 − C + C·|E|² so the residual
  contrast after the lens aperture and pixel averaging is C = `speckle_contrast` (0 = off);
- background: a constant level plus a smooth ambient texture of relative amplitude
  `ambient_texture` [inferred];
- sensor [inferred, EMVA 1288 linear camera model]: shot noise (Poisson on
  `electrons_per_dn`·I electrons), Gaussian read noise `read_noise_dn`, rounding to
  `bit_depth` bits and clipping at full scale (saturation).

Our choices [ours]: the patch's rows are aligned with the sampled point's row coordinate (its
centre row passes through the point), so only the column is measured from pixels; the patch's
left edge sits `jitter_px` columns at random around the stripe, so an extractor has to find the
stripe, not read its place from the crop. Everything is deterministic by the generator passed in.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.special import erf

from methods.errors import ConfigError


@dataclass(frozen=True)
class StripeRenderConfig:
    version: int = 1
    rows: int = 7                 # patch height (px), odd: the centre row is measured
    cols: int = 40                # patch width (px)
    jitter_px: int = 8            # stripe lands within ± this many px of the patch centre
    width_px: float = 1.5         # Gaussian σ of the stripe profile
    peak_dn: float = 170.0        # stripe peak above background on a white surface (grey levels)
    albedo_range: tuple[float, float] = (0.5, 1.0)   # surface reflectance drawn per point
    background_dn: float = 12.0
    ambient_texture: float = 0.3  # relative amplitude of the smooth ambient texture on background
    speckle_contrast: float = 0.2
    speckle_grain_px: float = 1.2
    electrons_per_dn: float = 4.0
    read_noise_dn: float = 1.5
    bit_depth: int = 8

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)
        need(self.version == 1, f"StripeRenderConfig version must be 1; received {self.version}.")
        need(self.rows >= 3 and self.rows % 2 == 1 and self.cols >= 16,
             f"Patch must be ≥ 3 rows (odd) × ≥ 16 columns; received {self.rows} × {self.cols}.")
        need(0 <= self.jitter_px <= self.cols // 2 - 6,
             f"jitter_px must be in [0, cols/2 − 6 = {self.cols // 2 - 6}]; received {self.jitter_px}.")
        need(self.width_px > 0 and self.peak_dn > 0 and self.speckle_grain_px > 0
             and self.electrons_per_dn > 0,
             "width_px, peak_dn, speckle_grain_px and electrons_per_dn must be > 0; received "
             f"{self.width_px}, {self.peak_dn}, {self.speckle_grain_px}, {self.electrons_per_dn}.")
        need(0 <= self.speckle_contrast <= 1, f"speckle_contrast must be in [0, 1]; received "
             f"{self.speckle_contrast}.")
        need(min(self.background_dn, self.ambient_texture, self.read_noise_dn) >= 0,
             "background_dn, ambient_texture and read_noise_dn must be ≥ 0.")
        need(len(self.albedo_range) == 2 and 0 < self.albedo_range[0] <= self.albedo_range[1],
             f"albedo_range must be (lo, hi) with 0 < lo ≤ hi; received {self.albedo_range}.")
        need(8 <= self.bit_depth <= 16, f"bit_depth must be 8..16; received {self.bit_depth}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StripePatches:
    """Rendered patches and where they sit in the image: column of the patch's x = 0 pixel."""

    images: np.ndarray      # (N, rows, cols) grey levels (float, integer-valued)
    col0: np.ndarray        # (N,) image column of the patch's first pixel centre


def _speckle(shape: tuple[int, ...], cfg: StripeRenderConfig, rng: np.random.Generator) -> np.ndarray:
    if cfg.speckle_contrast == 0:
        return np.ones(shape)
    s = (0.0, cfg.speckle_grain_px, cfg.speckle_grain_px)
    re = ndimage.gaussian_filter(rng.normal(size=shape), s, mode="wrap")
    im = ndimage.gaussian_filter(rng.normal(size=shape), s, mode="wrap")
    full = re ** 2 + im ** 2
    full /= full.mean(axis=(1, 2), keepdims=True)
    return 1.0 - cfg.speckle_contrast + cfg.speckle_contrast * full


def render_stripes(cfg: StripeRenderConfig, centre_col: np.ndarray, slope: np.ndarray,
                   rng: np.random.Generator) -> StripePatches:
    """Render one patch per point: the stripe crosses the centre row at image column `centre_col`
    (N,) with `slope` (N,) columns per row."""
    c = np.asarray(centre_col, dtype=float)
    slope = np.broadcast_to(np.asarray(slope, dtype=float), c.shape)
    if c.ndim != 1 or not np.all(np.isfinite(c)) or not np.all(np.isfinite(slope)):
        raise ConfigError(f"centre_col must be a finite 1-D array of image columns; received shape "
                          f"{c.shape}.")
    n, h, w = len(c), cfg.rows, cfg.cols
    col0 = np.floor(c) - w // 2 + rng.integers(-cfg.jitter_px, cfg.jitter_px + 1, n)
    x = np.arange(w)[None, None, :] + col0[:, None, None]          # image columns of pixel centres
    rows = np.arange(h)[None, :, None] - h // 2
    cr = c[:, None, None] + slope[:, None, None] * rows
    z = 1.0 / (math.sqrt(2.0) * cfg.width_px)
    profile = 0.5 * (erf((x + 0.5 - cr) * z) - erf((x - 0.5 - cr) * z))       # pixel-integrated
    profile *= math.sqrt(2.0 * math.pi) * cfg.width_px                         # peak ≈ 1
    albedo = rng.uniform(*cfg.albedo_range, n)[:, None, None]
    shape = (n, h, w)
    stripe = cfg.peak_dn * albedo * _speckle(shape, cfg, rng) * profile
    tex = ndimage.gaussian_filter(rng.normal(size=shape), (0.0, 4.0, 4.0), mode="wrap")
    tex /= max(float(tex.std()), 1e-12)
    background = cfg.background_dn * (1.0 + cfg.ambient_texture * tex)
    signal = np.clip(background + stripe, 0.0, None)
    electrons = rng.poisson(signal * cfg.electrons_per_dn)
    dn = electrons / cfg.electrons_per_dn + rng.normal(0.0, cfg.read_noise_dn, shape)
    full_scale = 2 ** cfg.bit_depth - 1
    return StripePatches(np.clip(np.round(dn), 0, full_scale), col0.astype(float))
