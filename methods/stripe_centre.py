"""Sub-pixel laser-stripe centre extraction: grey-centroid and Steger's Hessian line detector.

A light-section scanner measures, per image row, the column where the laser stripe crosses it.
Two classic extractors, both vectorised over a stack of image patches (N, H, W) whose centre row
(H // 2) is the row being measured:

- **grey centroid** [paper: the gray-centroid method named by Chen et al., arXiv 2403.01374 §2;
  formula as in e.g. Usamentiaga et al., "Fast and robust laser stripe extraction for 3D
  reconstruction in industrial environments", Machine Vision and Applications 23 (2012)]:
  c = Σ x·(I(x) − T)₊ / Σ (I(x) − T)₊ over a window of ±`half_window` px around the row's
  brightest pixel. Our choices [inferred]: T = background + `threshold`·(peak − background),
  the background being the row's median (the stripe covers a few columns of a wide patch); the
  row is first smoothed along x with a Gaussian of `presmooth_px` (0 = off) to stop a single
  speckle-bright pixel from winning the argmax.
- **Steger** [paper: C. Steger, "An unbiased detector of curvilinear structures", IEEE TPAMI
  20(2):113–125, 1998, §3]: Gaussian derivatives r_x, r_y, r_xx, r_xy, r_yy at scale `sigma_px`
  (scipy.ndimage.gaussian_filter, a maintained implementation; no Steger detector ships with
  scipy, scikit-image or OpenCV, so the sub-pixel step is written here); at each pixel of the
  centre row the line normal n is the Hessian eigenvector of the most negative eigenvalue and
  the centre is p = x + t·n with t = −(r·n)/(nᵀ H n); a pixel is a line point when |t nₓ|, |t n_y|
  ≤ 0.5 [paper] (we allow 0.55, so a centre on a pixel border is not lost [inferred]).
  Our choices [inferred]: we keep, on the centre row, the line point of the most
  negative eigenvalue, and move it along the line direction back onto the centre row, so the
  output is a column at a fixed row like the centroid's.

Both return (columns (N,) in patch coordinates, ok (N,) bool); a row with no stripe above the
background (`min_contrast`) or no valid line point is marked not ok, never guessed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from methods.errors import ConfigError

METHODS = ("centroid", "steger")
#: Steger accepts |t n| ≤ 0.5; a centre on a pixel border then falls just outside both pixels in
#: floating point and a background point wins instead — a little slack lets both neighbours accept.
_EDGE_SLACK = 0.05


@dataclass(frozen=True)
class StripeCentreConfig:
    """Extractor and its knobs (the farm tunes these: `search_space`)."""

    version: int = 1
    method: str = "steger"
    sigma_px: float = 1.5         # Steger: Gaussian derivative scale (≈ stripe σ or a bit above)
    half_window: int = 4          # centroid: ± px around the peak
    threshold: float = 0.2        # centroid: fraction of (peak − background) subtracted
    presmooth_px: float = 0.8     # centroid: Gaussian smoothing along x before the argmax
    min_contrast: float = 8.0     # peak − background (grey levels) below which a row has no stripe

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"StripeCentreConfig version must be 1; received {self.version}.")
        if self.method not in METHODS:
            raise ConfigError(f"Stripe extractor method must be one of {METHODS}; received "
                              f"{self.method!r}.")
        if not self.sigma_px > 0 or self.presmooth_px < 0:
            raise ConfigError(f"sigma_px must be > 0 and presmooth_px ≥ 0; received {self.sigma_px}, "
                              f"{self.presmooth_px}.")
        if self.half_window < 1 or not 0 <= self.threshold < 1 or self.min_contrast < 0:
            raise ConfigError("Need half_window ≥ 1, 0 ≤ threshold < 1 and min_contrast ≥ 0; received "
                              f"{self.half_window}, {self.threshold}, {self.min_contrast}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"method": ("categorical", list(METHODS)), "sigma_px": ("float", 0.8, 3.0),
                "half_window": ("int", 2, 8), "threshold": ("float", 0.0, 0.6)}


def _check(patches: np.ndarray) -> np.ndarray:
    p = np.asarray(patches, dtype=float)
    if p.ndim != 3 or p.shape[1] < 3 or p.shape[2] < 5:
        raise ConfigError(f"Expected a stack of image patches (N, H ≥ 3, W ≥ 5); received shape "
                          f"{p.shape}. Render them with sims.rigs.stripes.render_stripes.")
    return p


def _contrast(row: np.ndarray, min_contrast: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    bg = np.median(row, axis=1)
    peak = row.max(axis=1)
    return bg, peak, (peak - bg) >= min_contrast


def grey_centroid(patches: np.ndarray,
                  cfg: StripeCentreConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Thresholded grey centroid of each patch's centre row (see module docstring)."""
    cfg = cfg or StripeCentreConfig(method="centroid")
    p = _check(patches)
    row = p[:, p.shape[1] // 2, :]
    n, w = row.shape
    sm = row
    if cfg.presmooth_px > 0:
        sm = ndimage.gaussian_filter1d(row, cfg.presmooth_px, axis=1, mode="nearest")
    bg, peak, ok = _contrast(sm, cfg.min_contrast)
    centre = np.argmax(sm, axis=1)
    cols = centre[:, None] + np.arange(-cfg.half_window, cfg.half_window + 1)[None, :]
    inside = (cols >= 0) & (cols < w)
    vals = np.take_along_axis(row, np.clip(cols, 0, w - 1), axis=1)
    thr = (bg + cfg.threshold * (peak - bg))[:, None]
    wgt = np.where(inside, np.clip(vals - thr, 0.0, None), 0.0)
    tot = wgt.sum(axis=1)
    ok &= tot > 0
    c = (wgt * cols).sum(axis=1) / np.where(tot > 0, tot, 1.0)
    return np.where(ok, c, np.nan), ok


def steger(patches: np.ndarray, cfg: StripeCentreConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Steger's sub-pixel line point on each patch's centre row, as a column (module docstring)."""
    cfg = cfg or StripeCentreConfig()
    p = _check(patches)
    n, h, w = p.shape
    r0 = h // 2
    s = (0.0, cfg.sigma_px, cfg.sigma_px)

    def der(oy: int, ox: int) -> np.ndarray:
        return ndimage.gaussian_filter(p, s, order=(0, oy, ox), mode="nearest")[:, r0, :]

    rx, ry, rxx, rxy, ryy = der(0, 1), der(1, 0), der(0, 2), der(1, 1), der(2, 0)
    # Eigen-decomposition of the 2×2 Hessian [[rxx, rxy], [rxy, ryy]]: most negative eigenvalue.
    half_tr, det_half = 0.5 * (rxx + ryy), np.sqrt(0.25 * (rxx - ryy) ** 2 + rxy ** 2)
    lam = half_tr - det_half
    # eigenvector for lam: (rxy, lam − rxx) or (lam − ryy, rxy); pick the better-conditioned one
    v1x, v1y = rxy, lam - rxx
    v2x, v2y = lam - ryy, rxy
    use1 = (v1x ** 2 + v1y ** 2) >= (v2x ** 2 + v2y ** 2)
    nx, ny = np.where(use1, v1x, v2x), np.where(use1, v1y, v2y)
    norm = np.sqrt(nx ** 2 + ny ** 2)
    degenerate = norm < 1e-12
    nx = np.where(degenerate, 1.0, nx / np.where(degenerate, 1.0, norm))
    ny = np.where(degenerate, 0.0, ny / np.where(degenerate, 1.0, norm))
    curv = rxx * nx ** 2 + 2 * rxy * nx * ny + ryy * ny ** 2
    t = -(rx * nx + ry * ny) / np.where(np.abs(curv) > 1e-12, curv, np.nan)
    lim = 0.5 + _EDGE_SLACK
    line = (lam < 0) & (np.abs(t * nx) <= lim) & (np.abs(t * ny) <= lim) & np.isfinite(t)
    score = np.where(line, -lam, -np.inf)
    best = np.argmax(score, axis=1)
    idx = np.arange(n)
    ok = np.isfinite(score[idx, best])
    _, _, bright = _contrast(p[:, r0, :], cfg.min_contrast)
    ok &= bright
    tb, nxb, nyb = t[idx, best], nx[idx, best], ny[idx, best]
    px, py = best + tb * nxb, tb * nyb            # sub-pixel point, y relative to the centre row
    # back onto the centre row along the line direction (−n_y, n_x)
    steep = np.abs(nxb) > 1e-6
    c = px - nyb * (0.0 - py) / np.where(steep, nxb, 1.0)
    ok &= steep & np.isfinite(c)
    return np.where(ok, c, np.nan), ok


def extract(patches: np.ndarray, cfg: StripeCentreConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The configured extractor: columns (N,) in patch coordinates and ok (N,)."""
    cfg = cfg or StripeCentreConfig()
    return (steger if cfg.method == "steger" else grey_centroid)(patches, cfg)
