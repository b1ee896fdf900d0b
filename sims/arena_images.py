"""Image folders for the K-Sort arena web app: `folder/<model>/<prompt_id>.png`.

Two sources, both our own design [ours]:
- `procedural_images`: a demo/test world without any model. Each prompt id seeds a scene of a few
  coloured discs and bars; each "model" renders every scene with its own amount of pixel noise and
  blur, so a person (or a test) can tell better models from worse ones and the true order is known
  (less degradation = better).
- `write_folder`: writes any {model: {prompt_id: HxW or HxWx3 array in [0, 1]}} as PNGs, upscaled
  by an integer factor with nearest-neighbour so tiny samples (16x16 digits) are visible. The
  diffusion writer (actors/arena_samples.py) uses it for the farm's own generators.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from methods.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
DEMO_MODELS = {"clean": 0.0, "light-noise": 0.08, "noisy": 0.18, "blurred": 0.12, "very-noisy": 0.32}


def _scene(prompt_seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng([prompt_seed, 11])
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.ones((size, size, 3)) * rng.uniform(0.75, 0.95, size=3)
    for _ in range(int(rng.integers(2, 5))):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.22)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0.05, 0.9, size=3)
    y0 = int(rng.integers(0, size - size // 6))
    img[y0: y0 + size // 10, size // 8: -size // 8] = rng.uniform(0.0, 0.6, size=3)
    return img


def _blur(img: np.ndarray, passes: int) -> np.ndarray:
    for _ in range(passes):
        img = (img + np.roll(img, 1, 0) + np.roll(img, -1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 1)) / 5
    return img


def procedural_images(models: Mapping[str, float] | None = None, n_prompts: int = 6, size: int = 48,
                      seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """{model: {prompt_id: HxWx3 in [0, 1]}}; a model's value is its degradation (0 = clean)."""
    models = dict(DEMO_MODELS if models is None else models)
    if len(models) < 2 or n_prompts < 1 or size < 8:
        raise ConfigError(f"procedural_images needs ≥ 2 models, ≥ 1 prompt and size ≥ 8; got "
                          f"{len(models)} models, {n_prompts} prompts, size {size}.")
    out: dict[str, dict[str, np.ndarray]] = {}
    for mi, (name, level) in enumerate(models.items()):
        if level < 0:
            raise ConfigError(f"A model's degradation must be ≥ 0; {name!r} has {level}.")
        rng = np.random.default_rng([seed, 13, mi])
        imgs = {}
        for p in range(n_prompts):
            img = _scene(seed * 1000 + p, size)
            img = _blur(img, int(round(level * 10))) if "blur" in name else img
            imgs[f"prompt{p:03d}"] = np.clip(img + rng.normal(0, level, img.shape), 0, 1)
        out[name] = imgs
    return out


def demo_true_order(models: Mapping[str, float] | None = None) -> list[str]:
    """Best first: the procedural world's truth (less degradation is better)."""
    models = DEMO_MODELS if models is None else models
    return sorted(models, key=lambda m: models[m])


def write_folder(folder: str | Path, images: Mapping[str, Mapping[str, np.ndarray]],
                 upscale: int = 1) -> list[Path]:
    """Write `folder/<model>/<prompt_id>.png` for every image; returns the written paths."""
    from PIL import Image

    root = Path(folder)
    written: list[Path] = []
    for model, prompts in images.items():
        for prompt, arr in prompts.items():
            for kind, name in (("model", model), ("prompt id", prompt)):
                if not _NAME.match(name):
                    raise ConfigError(f"A {kind} must be 1-64 of letters, digits, '_', '.', '-'; "
                                      f"got {name!r}.")
            a = np.asarray(arr, dtype=float)
            if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
                a = np.moveaxis(a, 0, -1)  # CHW (torch) to HWC
            a = a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a
            a = np.repeat(np.repeat(a, upscale, 0), upscale, 1)
            (root / model).mkdir(parents=True, exist_ok=True)
            path = root / model / f"{prompt}.png"
            Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)).save(path)
            written.append(path)
    return written


def sample_ids(seeds: Sequence[int]) -> list[str]:
    """Prompt ids of unconditional samples: one per noise seed."""
    return [f"seed{s:04d}" for s in seeds]
