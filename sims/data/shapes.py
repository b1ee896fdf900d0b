"""`shapes`: synthetic instance-segmentation images with per-object masks, boxes and point prompts.

The tiny analogue of SAM's promptable segmentation task used to check SAQ-SAM ("SAQ-SAM:
Semantically-Aligned Quantization for Segment Anything Model", arXiv 2503.06515) at small scale;
the plan (quant.md §9, "shapes") asks for random circles/squares/triangles on a noisy background
with a box or point prompt per object. Everything here is our own design [inferred]; the prompt
conventions follow segment_anything's `SamPredictor` (pixel coordinates, boxes as XYXY, points as
(x, y)) and the COCO export follows the COCO instance format with RLE masks (pycocotools).

Exact generation procedure for one image (all draws from `numpy.random.default_rng(
SeedSequence([SEED_SALT, seed]))`, so the same seed and config give the same bytes):

1. Background: two colours c0 ~ U[0.15, 0.85]^3 and c1 = clip(c0 + U[-1, 1]^3 * texture_contrast).
   A texture t in [0, 1] mixes (1 - stripe_weight) × min-max-normalised Gaussian-smoothed white
   noise (sigma = texture_sigma × image_size) with stripe_weight × (0.5 + 0.5 sin(2π f u + phase)),
   u the coordinate along a random direction in units of the image size, f ~ U[stripe_freq].
   Pixel = c0 + (c1 - c0) t.
2. Objects: K ~ U{min_objects..max_objects}. Each object: class uniform over (circle, square,
   triangle); scale s ~ U[size_range] × image_size; centre ~ U[centre_margin, 1 - centre_margin]
   × image_size; angle ~ U[0, 2π) (squares and triangles). Circle radius s; square half-side
   0.886 s (same area as the circle); equilateral triangle with circumradius 1.3 s. A pixel
   belongs to a shape when its centre (i + 0.5) lies inside it.
3. Colour: RGB ~ U[0, 1]^3, redrawn (up to max_tries) until its Euclidean distance to c0, c1 and
   every earlier object colour is at least min_contrast.
4. Objects are painted in order, later ones on top (occlusion). A candidate object is accepted
   only if its own mask has ≥ min_visible_area × image_size² pixels and, after it is added, every
   object (earlier ones included) keeps ≥ min_visible_fraction of its full area and
   ≥ min_visible_area × image_size² visible pixels; otherwise it is redrawn, up to max_tries
   times, after which the image keeps the objects accepted so far. If not even the first object
   fits in max_tries draws (only with extreme configs), a ConfigError says what to change.
5. Pixel noise N(0, noise_std) is added and the image clipped to [0, 1] (float32, CHW).

Per object (visible part only): a boolean mask, a box (x0, y0, x1, y1) in pixel-edge coordinates
(x0 = first column, x1 = last column + 1, so the COCO bbox is [x0, y0, x1 - x0, y1 - y0]), a point
prompt (x, y) = the pixel of the visible mask farthest from its boundary
(`scipy.ndimage.distance_transform_edt`, ties broken by the first pixel in row-major order), and
a class label in CATEGORIES (COCO category ids 1, 2, 3).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from methods.errors import ConfigError

SEED_SALT = 0x5A4D  # separates shapes' random streams from other generators seeded with the same int
CATEGORIES: tuple[tuple[int, str], ...] = ((1, "circle"), (2, "square"), (3, "triangle"))


@dataclass(frozen=True)
class ShapesConfig:
    """Parameters of the generator (see the module docstring for how each is used).

    Attributes:
        image_size: side of the square image in pixels (64 by default; 128 works the same way).
        min_objects, max_objects: number of objects drawn per image (inclusive range).
        size_range: object scale s as a fraction of image_size (circle radius).
        centre_margin: object centres lie in [margin, 1 - margin] × image_size.
        min_visible_fraction: each object keeps at least this fraction of its full area visible.
        min_visible_area: each object keeps at least this fraction of the image area visible.
        min_contrast: minimum RGB distance between an object colour and the background colours
            and the other objects' colours.
        texture_sigma: Gaussian smoothing of the background noise, as a fraction of image_size.
        texture_contrast: half-range of the per-channel difference between the two background colours.
        stripe_weight: share of the stripe pattern in the background texture.
        stripe_freq: range of stripe frequencies in cycles per image.
        noise_std: standard deviation of the additive pixel noise.
        max_tries: redraws allowed for a rejected object or colour.
    """

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    size_range: tuple[float, float] = (0.08, 0.2)
    centre_margin: float = 0.12
    min_visible_fraction: float = 0.4
    min_visible_area: float = 0.005
    min_contrast: float = 0.35
    texture_sigma: float = 0.04
    texture_contrast: float = 0.25
    stripe_weight: float = 0.4
    stripe_freq: tuple[float, float] = (2.0, 6.0)
    noise_std: float = 0.02
    max_tries: int = 50
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ConfigError(f"shapes image_size must be an int >= 16, got {self.image_size!r}.")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ConfigError(
                f"shapes needs 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}."
            )
        lo, hi = self.size_range
        if not 0.0 < lo <= hi <= 0.5:
            raise ConfigError(f"shapes size_range must satisfy 0 < lo <= hi <= 0.5, got {self.size_range}.")
        checks = {
            "centre_margin": (0.0, 0.5, self.centre_margin),
            "min_visible_fraction": (0.0, 1.0, self.min_visible_fraction),
            "min_visible_area": (0.0, 0.5, self.min_visible_area),
            "min_contrast": (0.0, 1.0, self.min_contrast),
            "texture_sigma": (0.0, 0.5, self.texture_sigma),
            "texture_contrast": (0.0, 1.0, self.texture_contrast),
            "stripe_weight": (0.0, 1.0, self.stripe_weight),
            "noise_std": (0.0, 0.5, self.noise_std),
        }
        for name, (low, high, value) in checks.items():
            if not low <= value <= high:
                raise ConfigError(f"shapes {name} must lie in [{low}, {high}], got {value!r}.")
        if not 0.0 < self.stripe_freq[0] <= self.stripe_freq[1]:
            raise ConfigError(f"shapes stripe_freq must be 0 < lo <= hi, got {self.stripe_freq}.")
        if self.max_tries < 1:
            raise ConfigError(f"shapes max_tries must be >= 1, got {self.max_tries}.")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ShapesSample:
    """One image and its objects (K objects, image side S).

    image: (3, S, S) float32 in [0, 1]; masks: (K, S, S) bool, visible parts; boxes: (K, 4)
    float32 XYXY pixel edges; points: (K, 2) float32 (x, y) pixel indices; labels: (K,) int64
    category ids; seed: the generator seed.
    """

    image: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    seed: int


@dataclass(frozen=True)
class ShapesBatch:
    """N stacked images and their M objects flattened, for training and evaluation.

    images: (N, 3, S, S) float32; image_index: (M,) int64 image of each object; masks: (M, S, S)
    bool; boxes: (M, 4) float32; points: (M, 2) float32; labels: (M,) int64; seeds: (N,) int64.
    """

    images: torch.Tensor
    image_index: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    labels: torch.Tensor
    seeds: torch.Tensor


def _background(rng: np.random.Generator, cfg: ShapesConfig, yy: np.ndarray, xx: np.ndarray):
    from scipy.ndimage import gaussian_filter

    s = cfg.image_size
    c0 = rng.uniform(0.15, 0.85, size=3)
    c1 = np.clip(c0 + rng.uniform(-1.0, 1.0, size=3) * cfg.texture_contrast, 0.0, 1.0)
    noise = gaussian_filter(rng.standard_normal((s, s)), sigma=cfg.texture_sigma * s, mode="wrap")
    noise = (noise - noise.min()) / max(float(noise.max() - noise.min()), 1e-12)
    phi, phase = rng.uniform(0.0, 2 * math.pi, size=2)
    freq = rng.uniform(*cfg.stripe_freq)
    u = (xx * math.cos(phi) + yy * math.sin(phi)) / s
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * freq * u + phase)
    t = (1.0 - cfg.stripe_weight) * noise + cfg.stripe_weight * stripes
    image = c0[:, None, None] + (c1 - c0)[:, None, None] * t[None]
    return image, (c0, c1)


def _shape_mask(kind: int, cx: float, cy: float, scale: float, angle: float, yy, xx) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if kind == 1:  # circle
        return dx * dx + dy * dy <= scale * scale
    # rotate pixel offsets into the shape's frame
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == 2:  # square with the circle's area
        half = 0.886 * scale
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # equilateral triangle: inside all three edge half-planes (inradius = circumradius / 2)
    radius = 1.3 * scale
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        a = math.pi / 2 + k * 2 * math.pi / 3  # outward normal of edge k
        inside &= u * math.cos(a) + v * math.sin(a) <= radius / 2
    return inside


def _pick_colour(rng: np.random.Generator, cfg: ShapesConfig, avoid: list[np.ndarray]) -> np.ndarray:
    best, best_dist = None, -1.0
    for _ in range(cfg.max_tries):
        colour = rng.uniform(0.0, 1.0, size=3)
        dist = min(float(np.linalg.norm(colour - a)) for a in avoid)
        if dist >= cfg.min_contrast:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best  # rare: keep the most distinct colour seen rather than fail


def _visible_ok(full: list[np.ndarray], cfg: ShapesConfig) -> bool:
    min_pixels = cfg.min_visible_area * cfg.image_size**2
    covered = np.zeros_like(full[0])
    for mask in reversed(full):  # the last painted object is fully visible
        visible = mask & ~covered
        n_vis = int(visible.sum())
        if n_vis < min_pixels or n_vis < cfg.min_visible_fraction * int(mask.sum()):
            return False
        covered |= mask
    return True


def _interior_point(mask: np.ndarray) -> tuple[int, int]:
    from scipy.ndimage import distance_transform_edt

    # pad so that the image border counts as boundary too
    dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight XYXY box of a non-empty mask in pixel-edge coordinates (x1, y1 exclusive)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def make_shapes_image(seed: int, config: ShapesConfig | None = None) -> ShapesSample:
    """Generate the image with this seed (see the module docstring for the procedure)."""
    cfg = config or ShapesConfig()
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"shapes seed must be a non-negative int, got {seed!r}.")
    rng = np.random.default_rng(np.random.SeedSequence([SEED_SALT, int(seed)]))
    s = cfg.image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
    image, bg = _background(rng, cfg, yy, xx)
    n_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    full: list[np.ndarray] = []
    kinds: list[int] = []
    colours: list[np.ndarray] = []
    for _ in range(n_objects):
        for _ in range(cfg.max_tries):
            kind = int(rng.integers(1, 4))
            scale = rng.uniform(*cfg.size_range) * s
            cx, cy = rng.uniform(cfg.centre_margin, 1.0 - cfg.centre_margin, size=2) * s
            angle = rng.uniform(0.0, 2 * math.pi)
            mask = _shape_mask(kind, cx, cy, scale, angle, yy, xx)
            if _visible_ok([*full, mask], cfg):
                full.append(mask)
                kinds.append(kind)
                colours.append(_pick_colour(rng, cfg, [*bg, *colours]))
                break
        if len(full) == 0:
            raise ConfigError(
                f"shapes could not place a single object in {cfg.max_tries} tries with {cfg}; "
                f"lower min_visible_area or raise size_range."
            )
    for mask, colour in zip(full, colours, strict=True):
        image[:, mask] = colour[:, None]
    image = image + rng.normal(0.0, cfg.noise_std, size=image.shape)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)

    covered = np.zeros((s, s), dtype=bool)
    visible: list[np.ndarray] = []
    for mask in reversed(full):
        visible.append(mask & ~covered)
        covered |= mask
    visible.reverse()
    masks = np.stack(visible)
    boxes = np.array([mask_box(m) for m in masks], dtype=np.float32)
    points = np.array([_interior_point(m) for m in masks], dtype=np.float32)
    labels = np.array(kinds, dtype=np.int64)
    return ShapesSample(image, masks, boxes, points, labels, int(seed))


def make_shapes_dataset(
    n: int, first_seed: int = 0, config: ShapesConfig | None = None
) -> list[ShapesSample]:
    """`n` images with seeds first_seed, first_seed + 1, ..., first_seed + n - 1.

    Disjoint seed ranges give disjoint (independently drawn) train and test sets.
    """
    if n < 0:
        raise ConfigError(f"shapes dataset size must be >= 0, got {n}.")
    return [make_shapes_image(first_seed + i, config) for i in range(n)]


def stack_samples(samples: list[ShapesSample]) -> ShapesBatch:
    """Stack samples into tensors, flattening objects over images (see `ShapesBatch`)."""
    if not samples:
        raise ConfigError("stack_samples needs at least one shapes sample, got an empty list.")
    counts = [len(smp.labels) for smp in samples]
    return ShapesBatch(
        images=torch.from_numpy(np.stack([smp.image for smp in samples])),
        image_index=torch.repeat_interleave(torch.arange(len(samples)), torch.tensor(counts)),
        masks=torch.from_numpy(np.concatenate([smp.masks for smp in samples])),
        boxes=torch.from_numpy(np.concatenate([smp.boxes for smp in samples])),
        points=torch.from_numpy(np.concatenate([smp.points for smp in samples])),
        labels=torch.from_numpy(np.concatenate([smp.labels for smp in samples])),
        seeds=torch.tensor([smp.seed for smp in samples], dtype=torch.int64),
    )


def to_coco(samples: list[ShapesSample]) -> dict:
    """COCO instance-segmentation ground truth (images, annotations with RLE masks, categories).

    Image ids are the sample seeds; annotation ids count from 1 in sample order.
    """
    from methods.metrics.masks import coco_ground_truth

    return coco_ground_truth(
        [smp.masks for smp in samples],
        [smp.labels for smp in samples],
        image_ids=[smp.seed for smp in samples],
        categories=CATEGORIES,
        file_names=[f"shapes_{smp.seed:08d}.png" for smp in samples],
    )
