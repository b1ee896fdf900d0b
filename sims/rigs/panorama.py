"""Pixels for the search rig: the wide-angle panorama and the galvo camera's high-resolution crop.

Paper context: "A Novel Wide-Area Multiobject Detection System with High-Probability Region
Searching", Long, Zhao, Chen, Gu, Gu; arXiv 2405.04589 (2024). The paper segments a real wide-angle
image and detects in real 224 px galvo-camera frames; neither the images nor the renderer are
public, so everything in this file is our design [ours]:

- a scene is *geometry*, not a label map: wavy horizontal band boundaries (sky, building, tree,
  sidewalk, road from top to bottom, each boundary `edge + amp·sin(2π·freq·u/W + phase)`), round
  blobs of one class, and point objects (targets and distractors) at continuous wide-pixel
  positions. `label_at(u, v)` evaluates the geometry anywhere, so the panorama (1 sample per wide
  pixel) and a crop (≈ 14 samples per wide pixel) are two samplings of the same world;
- region textures are procedural and defined in wide-pixel units, with detail finer than a wide
  pixel (value noise from an integer hash, octaves down to 1/16 px; window grids on buildings,
  tile seams on sidewalks, leaf noise on trees, cloud noise and a gradient in the sky), with a
  per-scene illumination gain and colour jitter;
- objects: targets are dark upright ellipses (people), distractors are thin poles and faint round
  bushes; size and contrast fall with distance, and distance grows towards the horizon (row 0):
  distance factor d = 1 + far·(1 − v/H), size ∝ 1/d, contrast ∝ 1/√d (haze);
- optics: Gaussian blur (σ in output pixels) and additive Gaussian noise, then clipping to [0, 1].

Everything is deterministic by seed: geometry from the scene generator, noise from the caller's
`numpy.random.Generator`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

#: Base colour (RGB in [0, 1]) of each region class the renderer knows.
CLASS_RGB = {
    "sky": (0.55, 0.70, 0.90),
    "building": (0.60, 0.55, 0.50),
    "tree": (0.20, 0.45, 0.15),
    "sidewalk": (0.70, 0.68, 0.62),
    "road": (0.30, 0.30, 0.33),
}
TARGET_RGB = np.array([0.12, 0.10, 0.16])
POLE_RGB = np.array([0.18, 0.18, 0.18])
BUSH_RGB = np.array([0.15, 0.30, 0.12])


@dataclass(frozen=True)
class SceneGeometry:
    """Analytic scene layout in wide-pixel coordinates (u = column, v = row; pixel centres at +0.5)."""

    size: int                      # wide image side (pixels)
    band_cls: np.ndarray           # (B,) class index of each band, top to bottom
    edges: np.ndarray              # (B-1,) mean boundary rows
    amp: np.ndarray                # (B-1,) boundary wave amplitude (rows)
    freq: np.ndarray               # (B-1,) waves across the image
    phase: np.ndarray              # (B-1,)
    blobs: np.ndarray              # (K, 3) centre row, centre column, radius
    blob_cls: int
    texture_seed: int
    gain: float                    # illumination gain
    tint: np.ndarray               # (C, 3) per-class colour jitter

    def label_at(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Class index at continuous positions (any shape)."""
        u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
        idx = np.zeros(np.broadcast(u, v).shape, dtype=int)
        for e, a, f, p in zip(self.edges, self.amp, self.freq, self.phase, strict=True):
            idx += (v >= e + a * np.sin(2 * np.pi * f * u / self.size + p)).astype(int)
        lab = self.band_cls[idx]
        for cy, cx, r in self.blobs:
            lab = np.where((v - cy) ** 2 + (u - cx) ** 2 <= r * r, self.blob_cls, lab)
        return lab

    def raster(self) -> np.ndarray:
        """(H, W) label map sampled at the pixel centres."""
        c = np.arange(self.size) + 0.5
        uu, vv = np.meshgrid(c, c)
        return self.label_at(uu, vv)


@dataclass(frozen=True)
class Objects:
    """Point objects at continuous wide-pixel positions; `kind` 0 = target, 1 = pole, 2 = bush."""

    px: np.ndarray        # (N, 2) (u, v)
    kind: np.ndarray      # (N,)
    size_px: np.ndarray   # (N,) σ of the object's short axis, wide pixels
    contrast: np.ndarray  # (N,) in [0, 1]


def distance_factor(v: np.ndarray, size: int, far: float) -> np.ndarray:
    """1 at the bottom row (near), 1 + far at the top row (the horizon side)."""
    return 1.0 + far * (1.0 - np.clip(np.asarray(v, dtype=float) / size, 0.0, 1.0))


def make_objects(targets_px: np.ndarray, distractors_px: np.ndarray, distractor_kind: np.ndarray,
                 size: int, rng: np.random.Generator, target_size_px: float = 0.45,
                 target_contrast: float = 0.85, far: float = 3.0) -> Objects:
    """Targets and distractors with size ∝ 1/d and contrast ∝ 1/√d (d = distance factor)."""
    px = np.vstack([np.reshape(targets_px, (-1, 2)), np.reshape(distractors_px, (-1, 2))])
    kind = np.concatenate([np.zeros(len(targets_px), dtype=int), np.asarray(distractor_kind, dtype=int)])
    d = distance_factor(px[:, 1], size, far)
    size_px = target_size_px * rng.uniform(0.8, 1.25, len(px)) / d
    contrast = np.clip(target_contrast * rng.uniform(0.8, 1.1, len(px)) / np.sqrt(d), 0.0, 1.0)
    contrast = np.where(kind == 2, 0.45 * contrast, contrast)   # bushes are faint
    return Objects(px, kind, size_px, contrast)


# ----------------------------------------------------------------------------- textures
def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (seed * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).astype(float) / float(0x1000000)


def value_noise(u: np.ndarray, v: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth noise in [-0.5, 0.5) with features `scale` wide pixels apart (bilinear, smoothstep)."""
    x, y = u / scale, v / scale
    ix, iy = np.floor(x), np.floor(y)
    fx, fy = x - ix, y - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a, b = _hash01(ix, iy, seed), _hash01(ix + 1, iy, seed)
    c, d = _hash01(ix, iy + 1, seed), _hash01(ix + 1, iy + 1, seed)
    return (a + (b - a) * fx) * (1 - fy) + (c + (d - c) * fx) * fy - 0.5


def fractal_noise(u: np.ndarray, v: np.ndarray, scale: float, octaves: int, seed: int) -> np.ndarray:
    out, amp = np.zeros(np.broadcast(u, v).shape), 1.0
    for k in range(octaves):
        out += amp * value_noise(u, v, scale / 2 ** k, seed + 101 * k)
        amp *= 0.55
    return out


def shade(u: np.ndarray, v: np.ndarray, geom: SceneGeometry, class_names: tuple[str, ...]) -> np.ndarray:
    """RGB of the regions (objects excluded) at continuous positions u, v (same shape)."""
    lab = geom.label_at(u, v)
    out = np.zeros(lab.shape + (3,))
    s = geom.texture_seed
    for ci, name in enumerate(class_names):
        m = lab == ci
        if not m.any():
            continue
        uu, vv = u[m], v[m]
        base = np.array(CLASS_RGB.get(name, (0.5, 0.5, 0.5))) + geom.tint[ci]
        if name == "sky":
            tex = 0.10 * fractal_noise(uu, vv, 24.0, 3, s + 1)[:, None] + 0.08 * (vv / geom.size)[:, None]
        elif name == "building":
            facade = 0.12 * value_noise(uu, 0 * vv, 7.0, s + 2)
            wu, wv = np.mod(uu, 1.6), np.mod(vv, 2.1)
            window = (wu > 0.2) & (wu < 1.4) & (wv > 0.8) & (wv < 1.3)   # wide, short panes
            tex = (facade - 0.25 * window + 0.03 * fractal_noise(uu, vv, 0.5, 2, s + 3))[:, None]
        elif name == "tree":
            tex = 0.22 * fractal_noise(uu, vv, 0.8, 4, s + 4)[:, None] * np.array([0.8, 1.0, 0.6])
        elif name == "sidewalk":
            seam = (np.mod(uu, 1.0) < 0.07) | (np.mod(vv, 1.0) < 0.07)
            tex = (-0.12 * seam + 0.05 * fractal_noise(uu, vv, 0.6, 3, s + 5))[:, None]
        else:  # road and anything else: asphalt grain
            tex = (0.06 * fractal_noise(uu, vv, 0.35, 3, s + 6)
                   + 0.04 * value_noise(uu, vv, 9.0, s + 7))[:, None]
        out[m] = base + tex
    return out * geom.gain


def draw_objects(img: np.ndarray, u: np.ndarray, v: np.ndarray, objs: Objects,
                 pad: float = 4.0) -> np.ndarray:
    """Alpha-blend the objects onto `img` (H, W, 3) sampled at positions u, v (H, W)."""
    u0, u1, v0, v1 = u.min(), u.max(), v.min(), v.max()
    for (ou, ov), kind, s, c in zip(objs.px, objs.kind, objs.size_px, objs.contrast, strict=True):
        reach = pad * s * (5.0 if kind == 1 else 2.0)
        if ou < u0 - reach or ou > u1 + reach or ov < v0 - reach or ov > v1 + reach:
            continue
        du, dv = u - ou, v - ov
        if kind == 0:     # person: upright ellipse, 1 : 2
            g, rgb = np.exp(-0.5 * ((du / s) ** 2 + (dv / (2.0 * s)) ** 2)), TARGET_RGB
        elif kind == 1:   # pole: thin and tall
            g, rgb = np.exp(-0.5 * ((du / (0.35 * s)) ** 2 + (dv / (6.0 * s)) ** 2)), POLE_RGB
        else:             # bush: round, wider, faint
            g, rgb = np.exp(-0.5 * ((du ** 2 + dv ** 2) / (1.8 * s) ** 2)), BUSH_RGB
        a = (c * np.minimum(1.0, 1.6 * g))[..., None]
        img = img * (1 - a) + a * rgb
    return img


def _optics(img: np.ndarray, blur_px: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    if blur_px > 0:
        img = gaussian_filter(img, sigma=(blur_px, blur_px, 0), mode="nearest")
    return np.clip(img + rng.normal(0.0, noise, img.shape), 0.0, 1.0).astype(np.float32)


def render_panorama(geom: SceneGeometry, objs: Objects, class_names: tuple[str, ...],
                    rng: np.random.Generator, blur_px: float = 0.6, noise: float = 0.02) -> np.ndarray:
    """The wide-angle image, (H, W, 3) float32 in [0, 1], one sample per wide pixel."""
    c = np.arange(geom.size) + 0.5
    uu, vv = np.meshgrid(c, c)
    img = draw_objects(shade(uu, vv, geom, class_names), uu, vv, objs)
    return _optics(img, blur_px, noise, rng)


def voltage_to_pixel(volts: np.ndarray, px_to_v: Callable[[np.ndarray], np.ndarray], size: int,
                     iters: int = 3) -> np.ndarray:
    """Invert a smooth pixel → voltage map by Newton steps with a forward-difference Jacobian."""
    target = np.asarray(volts, dtype=float).reshape(-1, 2)
    centre = np.full((1, 2), size / 2.0)
    h = 1e-3
    v0 = px_to_v(centre)
    j0 = np.stack([(px_to_v(centre + [h, 0]) - v0)[0], (px_to_v(centre + [0, h]) - v0)[0]], axis=1) / h
    p = centre + (target - v0) @ np.linalg.inv(j0).T
    for _ in range(iters):
        f0 = px_to_v(p)
        jx, jy = (px_to_v(p + [h, 0]) - f0) / h, (px_to_v(p + [0, h]) - f0) / h
        f = f0 - target
        det = jx[:, 0] * jy[:, 1] - jy[:, 0] * jx[:, 1]
        p = p - np.stack([(jy[:, 1] * f[:, 0] - jy[:, 0] * f[:, 1]) / det,
                          (-jx[:, 1] * f[:, 0] + jx[:, 0] * f[:, 1]) / det], axis=1)
    return p


def crop_grid(centre_v: np.ndarray, fov_v: float, n: int) -> np.ndarray:
    """(n·n, 2) voltages of the crop's pixel centres, row-major, row 0 at the smallest Vy."""
    off = (np.arange(n) + 0.5) / n * fov_v - fov_v / 2
    gx, gy = np.meshgrid(off, off)
    return np.asarray(centre_v, dtype=float)[None, :] + np.stack([gx.ravel(), gy.ravel()], axis=1)


def render_crop(geom: SceneGeometry, objs: Objects, class_names: tuple[str, ...], centre_v: np.ndarray,
                fov_v: float, n: int, px_to_v: Callable[[np.ndarray], np.ndarray], rng: np.random.Generator,
                blur_px: float = 0.8, noise: float = 0.02) -> np.ndarray:
    """What the galvo camera sees when pointed at `centre_v`: (n, n, 3) float32 in [0, 1]."""
    # The map is smooth over one FOV: invert it exactly on a 5 x 5 grid spanning the outer pixel
    # centres and interpolate bilinearly (exact inversion of every pixel costs 6x the render).
    from scipy.ndimage import map_coordinates

    k = 5
    span = fov_v * (n - 1) / n
    off = np.linspace(-span / 2, span / 2, k)
    gx, gy = np.meshgrid(off, off)
    coarse_v = np.asarray(centre_v, dtype=float)[None, :] + np.stack([gx.ravel(), gy.ravel()], axis=1)
    coarse = voltage_to_pixel(coarse_v, px_to_v, geom.size).reshape(k, k, 2)
    t = np.linspace(0, k - 1, n)
    rr, cc = np.meshgrid(t, t, indexing="ij")
    uu = map_coordinates(coarse[..., 0], [rr, cc], order=1)
    vv = map_coordinates(coarse[..., 1], [rr, cc], order=1)
    img = draw_objects(shade(uu, vv, geom, class_names), uu, vv, objs)
    return _optics(img, blur_px, noise, rng)


def random_geometry(class_names: tuple[str, ...], bands: tuple[tuple[str, float], ...], size: int,
                    n_blobs: int, blob_class: str, rng: np.random.Generator) -> SceneGeometry:
    """Band fractions jittered ×U(0.7, 1.3), wavy boundaries, blobs, illumination and tint."""
    frac = np.array([f for _, f in bands]) * rng.uniform(0.7, 1.3, len(bands))
    edges = np.cumsum(frac / frac.sum())[:-1] * size
    nb = len(edges)
    amp = 0.03 * size * rng.uniform(0.5, 1.5, nb)
    freq = rng.uniform(0.5, 2.0, nb)
    phase = rng.uniform(0, 2 * np.pi, nb)
    blobs = np.stack([rng.uniform(0, size, n_blobs), rng.uniform(0, size, n_blobs),
                      rng.uniform(0.02, 0.06, n_blobs) * size], axis=1) if n_blobs else np.zeros((0, 3))
    return SceneGeometry(size, np.array([class_names.index(b) for b, _ in bands]), edges, amp, freq, phase,
                         blobs, class_names.index(blob_class) if blob_class in class_names else 0,
                         int(rng.integers(0, 2 ** 31 - 1)), float(rng.uniform(0.8, 1.15)),
                         rng.uniform(-0.05, 0.05, (len(class_names), 3)))


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(H, W) labels → (H, W, C) probabilities of 0/1 (the ground-truth 'segmenter')."""
    return np.eye(n_classes, dtype=np.float32)[np.asarray(labels)]


def entropy_confidence(probs: np.ndarray) -> np.ndarray:
    """1 − normalised entropy of per-pixel class probabilities (1 = certain, 0 = uniform)."""
    p = np.clip(probs, 1e-9, 1.0)
    return 1.0 - (-(p * np.log(p)).sum(-1)) / math.log(p.shape[-1])


# ----------------------------------------------------------------------------- detector
def detect_blobs(img: np.ndarray, scales: tuple[float, ...] = (1.5, 3.5), min_snr: float = 3.0,
                 max_elong: float = 6.0, min_upright: float = 1.3, border: int = 2) -> np.ndarray:
    """Dark compact blobs in a crop: (K, 4) rows of (col, row, snr, scale) in crop pixels.

    [ours] A classical detector: difference of Gaussians D_s = G_{2.5s} * I − G_s * I at each scale
    (positive on dark blobs), divided by the crop's robust noise 1.4826·MAD(D_s); local maxima of
    the best scale's SNR above `min_snr`; sub-pixel centre by a parabola through the 3 samples on
    each axis; a Hessian shape test at the peak (both curvatures positive, ratio ≤ `max_elong`)
    rejects poles and edges, and an upright test (horizontal curvature ≥ `min_upright` × vertical:
    people are taller than wide) rejects round bushes and wide window panes.
    """
    from scipy.ndimage import maximum_filter

    g = img.mean(axis=-1) if img.ndim == 3 else np.asarray(img, dtype=float)
    stack, smooth = [], []
    for s in scales:
        small = gaussian_filter(g, s, mode="nearest", truncate=3.0)
        d = gaussian_filter(g, 2.5 * s, mode="nearest", truncate=3.0) - small
        noise = 1.4826 * float(np.median(np.abs(d - np.median(d)))) + 1e-4
        stack.append(d / noise)
        smooth.append(small)
    snr_all = np.stack(stack)
    best = snr_all.argmax(0)
    snr = snr_all.max(0)
    peak = (snr == maximum_filter(snr, size=5, mode="nearest")) & (snr > min_snr)
    h, w = snr.shape
    peak[:border], peak[h - border:], peak[:, :border], peak[:, w - border:] = False, False, False, False
    out = []
    for r, c in zip(*np.nonzero(peak), strict=True):
        k = int(best[r, c])
        sm = smooth[k]
        dxx = sm[r, c + 1] - 2 * sm[r, c] + sm[r, c - 1]
        dyy = sm[r + 1, c] - 2 * sm[r, c] + sm[r - 1, c]
        dxy = 0.25 * (sm[r + 1, c + 1] - sm[r + 1, c - 1] - sm[r - 1, c + 1] + sm[r - 1, c - 1])
        tr, det = dxx + dyy, dxx * dyy - dxy * dxy
        disc = math.sqrt(max(tr * tr / 4 - det, 0.0))
        l1, l2 = tr / 2 + disc, tr / 2 - disc
        if l2 <= 0 or l1 / l2 > max_elong or dxx < min_upright * dyy:
            continue
        def _vertex(a: float, b: float, cc: float) -> float:
            den = a - 2 * b + cc
            return float(np.clip(0.5 * (a - cc) / den, -0.5, 0.5)) if den < 0 else 0.0
        dc = _vertex(snr[r, c - 1], snr[r, c], snr[r, c + 1])
        dr = _vertex(snr[r - 1, c], snr[r, c], snr[r + 1, c])
        out.append((c + 0.5 + dc, r + 0.5 + dr, float(snr[r, c]), scales[k]))
    return np.array(out, dtype=float).reshape(-1, 4)
