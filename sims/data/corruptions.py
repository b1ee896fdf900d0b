"""ImageNet-C style corruptions for small grayscale images (digits at 8, 16 and 32 px).

Paper: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019, arXiv:1903.12261. Implementation: the `imagecorruptions` package 1.1.2
(Michaelis et al., "Benchmarking Robustness in Object Detection", arXiv:1907.07484), which packages
the paper's official code with its severity tables.

What follows what:
- [code] 13 of the 17 corruptions call the package's own functions (`imagecorruptions.corruption_dict`)
  directly. The package's `corrupt()` wrapper is not used because it refuses images under 32 px;
  the functions themselves run at 8 and 16 px (tested for every severity).
- [code, re-implemented] Four corruptions are our own code, written from the package's definitions
  and severity tables because the package's version fails here:
  `gaussian_blur`, `glass_blur` (call scikit-image's removed `multichannel=` argument),
  `fog` (uses `np.float_`, removed in NumPy 2) and `impulse_noise` (scikit-image's `random_noise`
  draws from a fresh unseeded generator, so it cannot be made deterministic; ours passes our
  generator to the same scikit-image function). The package is not patched.
- The registry holds the 15 ImageNet-C corruptions in the paper's order, then two of the package's
  four extra ("validation") corruptions: speckle_noise, gaussian_blur. Left out: saturate, an exact
  identity on grayscale images (a gray pixel has saturation 0 and its red channel is its value), and
  spatter, whose water branch divides by the maximum of an edge map that is empty on small images and
  returns NaN: measured on 40 digits × 5 severities, 24/200 at 8 px, 4/200 at 16 px, 1/200 at 32 px.
- [inferred] Grayscale handling, seeding and the uint8/float interface are our design (below).

Interface. Every entry of `CORRUPTIONS` is `fn(image, severity, rng) -> image` where `image` is a
2-D (H, W) array, uint8 in 0..255 or floating in [0, 1]; `severity` an int 1..5; `rng` a
`numpy.random.Generator`, the only source of randomness. The result has the input's shape; it is
uint8 for uint8 input and float32 in [0, 1] (multiples of 1/255) for float input. As in the package's
`corrupt()`, the float result in [0, 255] is cast to uint8 by truncation (`np.uint8`), so ImageNet-C's
8-bit quantisation is kept; float input is first rounded to uint8 (`round(255 x)`).

Determinism [inferred]. The package draws from NumPy's global generator. A package corruption draws
one 32-bit seed from `rng`, seeds the global generator with it inside a lock, runs, and restores the
caller's global state (once per `global_numpy_scope()` block when one is open), so the same `rng`
state gives the same bytes and the caller's global stream is untouched. Our own four use `rng`
directly. `corruption_seed(base, name, severity, index)` derives a per-image seed (NumPy
`SeedSequence` over base seed, CRC-32 of the name, severity, image index), so an image's corruption
does not depend on which batch or stream it appears in.

Grayscale handling [inferred]. The package's functions have a grayscale (2-D) branch, and we use it
for every package corruption but one: the image goes in as a PIL "L" image. We do not replicate to
RGB and convert back for those, because per-channel independent noise (gaussian/shot/speckle) averaged
back to one channel would shrink its standard deviation by about a third compared with the package's
tables. `motion_blur`'s 2-D branch raises IndexError (it indexes `shape[2]` of a 2-D shape), so it gets
the image replicated to 3 identical channels and returns channel 0; the blur shifts every channel
alike, so the 3 output channels are identical (tested) and no colour conversion is involved.
Package quirks kept as they are: frost's 2-D branch converts the BGR frost texture with RGB luma
weights; glass blur's pixel "swap" on RGB arrays is really a copy (numpy row views), and our
re-implementation keeps that copy semantics so it matches ImageNet-C data.
"""
from __future__ import annotations

import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from methods.errors import ConfigError, EvfarmError
from methods.registry import CONFIG_LESS, Registry


@runtime_checkable
class Corruption(Protocol):
    """`fn(image (H, W), severity 1..5, rng) -> image` (the interface in the module docstring)."""

    def __call__(self, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray: ...


SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIZE = 8
_GLOBAL_RNG_LOCK = threading.RLock()
_SCOPE = threading.local()  # nesting depth of global_numpy_scope in this thread


# ---------------------------------------------------------------- package access and plumbing
@lru_cache(maxsize=1)
def _package_functions() -> dict[str, Callable]:
    """`imagecorruptions.corruption_dict`, imported once (it pulls in scikit-image and OpenCV)."""
    try:
        with warnings.catch_warnings():
            # pkg_resources and scipy.ndimage.interpolation deprecation warnings at import time.
            warnings.simplefilter("ignore")
            from imagecorruptions import corruption_dict
    except ImportError as exc:
        raise ImportError(
            "imagecorruptions 1.1.2 could not be imported "
            f"({exc}). It needs pkg_resources: install 'setuptools<81' next to it in this environment."
        ) from exc
    return dict(corruption_dict)


@contextmanager
def global_numpy_scope() -> Iterator[None]:
    """Hold NumPy's global generator for a block of package corruptions; restore it at the end.

    Saving and restoring the global state costs about 0.25 ms, several times a cheap corruption,
    so a batch loop opens one scope and each image inside only re-seeds (3 µs). Re-entrant."""
    with _GLOBAL_RNG_LOCK:  # the global generator is shared by every thread of the process
        depth = getattr(_SCOPE, "depth", 0)
        saved = np.random.get_state() if depth == 0 else None
        _SCOPE.depth = depth + 1
        try:
            yield
        finally:
            _SCOPE.depth = depth
            if saved is not None:
                np.random.set_state(saved)


@contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator for the block; the caller's state comes back at scope exit."""
    with global_numpy_scope():
        np.random.seed(seed)
        yield


def _check_severity(severity: int) -> None:
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or severity not in SEVERITIES:
        raise ConfigError(f"corruption severity must be an integer 1..5, got {severity!r}.")


def _to_uint8(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """The image as 2-D uint8, and whether the caller gave floats (so the result goes back to floats)."""
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < MIN_SIZE:
        raise ConfigError(
            f"a corruption takes one grayscale image of shape (H, W) with H, W >= {MIN_SIZE}, "
            f"got shape {image.shape}; pass images one at a time with the channel axis removed."
        )
    if image.dtype == np.uint8:
        return image, False
    if not np.issubdtype(image.dtype, np.floating):
        raise ConfigError(f"image dtype must be uint8 (0..255) or floating ([0, 1]), got {image.dtype}.")
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-6 or hi > 1.0 + 1e-6 or not np.isfinite(lo + hi):
        raise ConfigError(f"a float image must lie in [0, 1], got values in [{lo}, {hi}]; divide by 255?")
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8), True


def _finish(result: np.ndarray, as_float: bool) -> np.ndarray:
    """Float [0, 255] (or uint8 / PIL) → uint8 by truncation as the package's `corrupt()` does."""
    values = np.asarray(result, dtype=np.float64)
    if not np.isfinite(values).all():  # a NaN would be cast to an arbitrary byte silently
        raise EvfarmError("a corruption produced NaN or infinite pixels; this is a bug, please report it.")
    out = np.uint8(values.clip(0.0, 255.0))
    return (out.astype(np.float32) / 255.0) if as_float else out


def _run_package(name: str, image: np.ndarray, severity: int, rng: np.random.Generator,
                 replicate: bool = False) -> np.ndarray:
    _check_severity(severity)
    u8, as_float = _to_uint8(image)
    seed = int(rng.integers(0, 2**32))
    pil = Image.fromarray(np.stack([u8] * 3, axis=-1) if replicate else u8)
    with _seeded_global_numpy(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = np.asarray(_package_functions()[name](pil, int(severity)))
    if replicate:
        out = out[..., 0]  # the three channels are identical (see module docstring)
    return _finish(out, as_float)


# ---------------------------------------------------------------- our own four
_GAUSSIAN_BLUR_SIGMA = (1, 2, 3, 4, 6)
_GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # sigma, max_delta, iterations
_FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # strength, wibble decay
_IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)


def _skimage_gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's Gaussian filter as the package calls it (mode 'nearest', truncate 4), on 2-D."""
    from skimage.filters import gaussian

    return gaussian(x, sigma=sigma, channel_axis=None)


def _glass_shuffle(x: np.ndarray, max_delta: int, iterations: int, rng: np.random.Generator) -> None:
    """In place: scan rows h = H-d .. d+1 and columns w = W-d .. d+1 (descending) and copy
    x[h+dy, w+dx] into x[h, w] with dx, dy uniform integers in [-d, d) (as `np.random.randint`).
    The package's `x[h,w], x[h',w'] = x[h',w'], x[h,w]` on an (H, W, 3) array copies rather than
    swaps (both sides are views), and ImageNet-C data carries that; we reproduce the copy."""
    height, width = x.shape
    rows = range(height - max_delta, max_delta, -1)
    cols = range(width - max_delta, max_delta, -1)
    for _ in range(iterations):
        offsets = rng.integers(-max_delta, max_delta, size=(len(rows), len(cols), 2))
        for i, h in enumerate(rows):
            for j, w in enumerate(cols):
                dx, dy = offsets[i, j]
                x[h, w] = x[h + dy, w + dx]


def _plasma_fractal(mapsize: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height map of side `mapsize` (a power of two) in [0, 1], as the package's
    `plasma_fractal`: corner 0, initial wibble 100, each new point = mean of its 4 neighbours
    (periodic) + wibble·U(-wibble, wibble), wibble divided by `wibbledecay` at each halving."""
    grid = np.zeros((mapsize, mapsize), dtype=np.float64)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:mapsize:step, 0:mapsize:step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        grid[half:mapsize:step, half:mapsize:step] = wibbled_mean(square)
        centres = grid[half:mapsize:step, half:mapsize:step]
        corners = grid[0:mapsize:step, 0:mapsize:step]
        across = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0:mapsize:step, half:mapsize:step] = wibbled_mean(across)
        down = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half:mapsize:step, 0:mapsize:step] = wibbled_mean(down)
        step //= 2
        wibble /= wibbledecay
    grid -= grid.min()
    return grid / grid.max()


def _own_gaussian_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    _check_severity(severity)
    u8, as_float = _to_uint8(image)
    x = _skimage_gaussian(u8 / 255.0, _GAUSSIAN_BLUR_SIGMA[severity - 1])
    return _finish(np.clip(x, 0, 1) * 255, as_float)


def _own_glass_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    _check_severity(severity)
    sigma, max_delta, iterations = _GLASS_BLUR[severity - 1]
    u8, as_float = _to_uint8(image)
    x = np.uint8(_skimage_gaussian(u8 / 255.0, sigma) * 255)
    _glass_shuffle(x, max_delta, iterations, rng)
    return _finish(np.clip(_skimage_gaussian(x / 255.0, sigma), 0, 1) * 255, as_float)


def _own_fog(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    _check_severity(severity)
    strength, decay = _FOG[severity - 1]
    u8, as_float = _to_uint8(image)
    height, width = u8.shape
    mapsize = 1 << (max(height, width) - 1).bit_length()  # next power of two
    x = u8 / 255.0
    max_val = x.max()
    x = x + strength * _plasma_fractal(mapsize, decay, rng)[:height, :width]
    return _finish(np.clip(x * max_val / (max_val + strength), 0, 1) * 255, as_float)


def _own_impulse_noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from skimage.util import random_noise

    _check_severity(severity)
    u8, as_float = _to_uint8(image)
    x = random_noise(u8 / 255.0, mode="s&p", amount=_IMPULSE_AMOUNT[severity - 1], rng=rng)
    return _finish(np.clip(x, 0, 1) * 255, as_float)


# ---------------------------------------------------------------- the registry, canonical order
# Severity tables are quoted from imagecorruptions 1.1.2 (values on images scaled to [0, 1]).
def gaussian_noise(image, severity, rng):
    """Additive noise x + N(0, c²), c = (0.08, 0.12, 0.18, 0.26, 0.38); clipped to [0, 1]. Package."""
    return _run_package("gaussian_noise", image, severity, rng)


def shot_noise(image, severity, rng):
    """Poisson noise Poisson(c·x)/c, c = (60, 25, 12, 5, 3); clipped. Package."""
    return _run_package("shot_noise", image, severity, rng)


def impulse_noise(image, severity, rng):
    """Salt and pepper (50/50) on a fraction c = (0.03, 0.06, 0.09, 0.17, 0.27) of pixels:
    scikit-image `random_noise(mode='s&p', amount=c)`. Ours (the package's call cannot be seeded)."""
    return _own_impulse_noise(image, severity, rng)


def defocus_blur(image, severity, rng):
    """Disk kernel of radius r, anti-aliased by a 3×3 Gaussian of sigma a (kernel support ±8 px
    while r <= 8, else ±r with a 5×5 Gaussian), (r, a) = (3, .1), (4, .5), (6, .5), (8, .5), (10, .5);
    OpenCV filter2D (reflect-101 border). Deterministic. Package."""
    return _run_package("defocus_blur", image, severity, rng)


def glass_blur(image, severity, rng):
    """Gaussian blur (sigma), local pixel copies from U[-d, d) offsets repeated k times, blur again:
    (sigma, d, k) = (0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2); scikit-image
    Gaussian, mode 'nearest', truncate 4. Ours (the package's call uses a removed argument)."""
    return _own_glass_blur(image, severity, rng)


def motion_blur(image, severity, rng):
    """Sum of 2r+1 shifted copies (edge-replicated) weighted by a one-sided Gaussian of sigma s
    along an angle U(-45°, 45°), (r, s) = (10, 3), (15, 5), (15, 8), (15, 12), (20, 15). Package,
    on the image replicated to 3 channels (its 2-D branch fails), channel 0 back."""
    return _run_package("motion_blur", image, severity, rng, replicate=True)


def zoom_blur(image, severity, rng):
    """Mean of the image and its centre zooms (scipy zoom, order 1, cropped) by factors
    arange(1, 1.11, .01), (1, 1.16, .01), (1, 1.21, .02), (1, 1.26, .02), (1, 1.31, .03).
    Deterministic. Package."""
    return _run_package("zoom_blur", image, severity, rng)


def snow(image, severity, rng):
    """Snow layer N(m, s) zoomed by z, thresholded at t, motion-blurred (radius r, sigma g, angle
    U(-135°, -45°)), added twice (once rotated 180°) to b·x + (1-b)·max(x, 1.5x + 0.5); (m, s, z, t,
    r, g, b) = (.1, .3, 3, .5, 10, 4, .8), (.2, .3, 2, .5, 12, 4, .7), (.55, .3, 4, .9, 12, 8, .7),
    (.55, .3, 4.5, .85, 12, 8, .65), (.55, .3, 2.5, .85, 12, 12, .55). Package."""
    return _run_package("snow", image, severity, rng)


def frost(image, severity, rng):
    """a·x + b·frost, a frost texture (one of the package's first five, rescaled to cover the image
    ×1.1, cubic, random crop, luma), (a, b) = (1, .4), (.8, .6), (.7, .7), (.65, .7), (.6, .75).
    Package (bundled textures)."""
    return _run_package("frost", image, severity, rng)


def fog(image, severity, rng):
    """x + c·plasma fractal (diamond-square, wibble decay w), rescaled by max(x)/(max(x)+c):
    (c, w) = (1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4). Ours (the package uses `np.float_`)."""
    return _own_fog(image, severity, rng)


def brightness(image, severity, rng):
    """x + c clipped, c = (.1, .2, .3, .4, .5) (HSV value shift; on grayscale the value is x).
    Deterministic. Package."""
    return _run_package("brightness", image, severity, rng)


def contrast(image, severity, rng):
    """(x - mean)·c + mean, c = (.4, .3, .2, .1, .05), mean over the image. Deterministic. Package."""
    return _run_package("contrast", image, severity, rng)


def elastic_transform(image, severity, rng):
    """Per-pixel displacements U(-0.005H, 0.005H), Gaussian-smoothed (sigma 0.01·(H, W), reflect,
    truncate 3) and scaled by alpha = 250·(.05, .065, .085, .1, .12); bilinear resampling
    (map_coordinates, reflect). Package.

    Small-image caveat (the package's definition, kept as is): the smoothing sigma 0.01·size is
    0.08–0.32 px at 8–32 px, so displacements are nearly independent per pixel (up to ±2–4.8 px at
    32 px, ±0.5–1.2 px at 8 px) and the result looks like pixel scatter, not a smooth warp.
    CIFAR-10-C's own elastic transform (Hendrycks' `make_cifar_c.py`) instead scales sigma with the
    image (0.03–0.2·size) and adds a random affine; it is not what this entry computes."""
    return _run_package("elastic_transform", image, severity, rng)


def pixelate(image, severity, rng):
    """BOX downsample to int(c·size) then NEAREST upsample (PIL), c = (.6, .5, .4, .3, .25).
    Deterministic. Package."""
    return _run_package("pixelate", image, severity, rng)


def jpeg_compression(image, severity, rng):
    """PIL JPEG at quality (25, 18, 15, 10, 7) (gray → RGB → JPEG → gray). Deterministic. Package."""
    return _run_package("jpeg_compression", image, severity, rng)


def speckle_noise(image, severity, rng):
    """Multiplicative noise x + x·N(0, c²), c = (.15, .2, .35, .45, .6); clipped. Package (extra)."""
    return _run_package("speckle_noise", image, severity, rng)


def gaussian_blur(image, severity, rng):
    """scikit-image Gaussian filter, sigma = (1, 2, 3, 4, 6), mode 'nearest', truncate 4.
    Deterministic. Ours (the package's call uses a removed argument) (extra)."""
    return _own_gaussian_blur(image, severity, rng)


COMMON_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)
# Two of the package's four extras are left out (see the module docstring): saturate (identity on
# grayscale) and spatter (NaN output on small images).
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur")
OWN_IMPLEMENTATIONS = frozenset({"impulse_noise", "glass_blur", "fog", "gaussian_blur"})
DETERMINISTIC = frozenset(
    {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression", "gaussian_blur"}
)
# In ImageNet-C order (`ordered`); corruptions take no config: `create(name)` is the function.
CORRUPTIONS: Registry[Corruption] = Registry("corruption", Corruption, creator=CONFIG_LESS, ordered=True)
for _name in COMMON_CORRUPTIONS + EXTRA_CORRUPTIONS:
    CORRUPTIONS.register(_name)(globals()[_name])


def get_corruption(name: str) -> Corruption:
    """The corruption function registered under `name` (an unknown name lists the closest)."""
    return CORRUPTIONS.get(name)


def corruption_seed(base_seed: int, name: str, severity: int, index: int) -> int:
    """A 64-bit seed for one image, from (base seed, CRC-32 of the name, severity, image index)."""
    entropy = [int(base_seed) & 0xFFFFFFFF, zlib.crc32(name.encode()), int(severity), int(index)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt one (H, W) image with a generator seeded by `seed` (see `corruption_seed`)."""
    return get_corruption(name)(image, severity, np.random.default_rng(seed))
