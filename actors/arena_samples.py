"""Samples of the farm's own diffusion configurations as an arena models folder.

`write_cachequant_samples(out, points, seeds)` loads the CacheQuant grid's pipeline once
(actors/model_shard.py: the zoo's ddpm-digits, or a local diffusers folder), prepares each named
configuration (a `ShardPoint`: cache interval, schedule, bits, corrections) with
`methods.cachequant.prepare_cachequant`, samples the same noise seeds with every one, and writes
`out/<name>/seed<NNNN>.png` (sims/arena_images.py). Every configuration sees the same initial
noise per seed, so a vote compares configurations, not seeds. `evfarm arena samples` calls it with
named presets; the CacheQuant grid's `--save-samples N` calls it with every completed grid point,
named by `point_name` (e.g. `n5-dps-w8a8-both`). Our own design [ours].
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from actors.model_shard import ShardConfig, ShardPoint, load_pipeline
from methods.cachequant import prepare_cachequant
from methods.errors import ConfigError, did_you_mean
from sims.arena_images import sample_ids, write_folder

PRESETS: dict[str, ShardPoint] = {
    "fp": ShardPoint(),
    "w8a8": ShardPoint(bits="w8a8"),
    "w4a4": ShardPoint(bits="w4a4"),
    "cached5": ShardPoint(interval=5),
    "cachequant-w8a8-n5": ShardPoint(interval=5, bits="w8a8", corrections="both"),
    "cachequant-w4a8-n5": ShardPoint(interval=5, bits="w4a8", corrections="both"),
}


def point_name(point: ShardPoint | Mapping[str, Any]) -> str:
    """A folder name for a grid point: `n<interval>-<schedule>-<bits>-<corrections>`, then the value of
    any further field that differs from its default (so a new field never renames old points)."""
    p = point if isinstance(point, ShardPoint) else ShardPoint.from_dict(dict(point))
    parts = [f"n{p.interval}", p.schedule, p.bits, p.corrections]
    base = {"interval", "schedule", "bits", "corrections"}
    parts += [str(getattr(p, f.name)) for f in fields(p)
              if f.name not in base and getattr(p, f.name) != f.default]
    return "-".join(parts)


def preset_points(names: Sequence[str]) -> dict[str, ShardPoint]:
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ConfigError(f"Unknown sample configuration(s) {unknown}. {did_you_mean(unknown[0], PRESETS)}")
    return {n: PRESETS[n] for n in names}


def write_cachequant_samples(out: str | Path, points: Mapping[str, ShardPoint], seeds: Sequence[int], *,
                             steps: int = 20, model: str = "auto", calib_samples: int = 8,
                             upscale: int = 8) -> dict[str, int]:
    """Write `out/<name>/seed<NNNN>.png` for every configuration and seed; returns {name: n images}."""
    if not points or not seeds:
        raise ConfigError(f"Need ≥ 1 configuration and ≥ 1 seed; got {list(points)} and {list(seeds)}.")
    torch.set_num_threads(1)
    cfg = ShardConfig(model=model, steps=steps, calib_samples=calib_samples)
    unet, scheduler, _ = load_pipeline(cfg)
    unet = unet.eval()
    size = unet.config.sample_size
    size = tuple(size) if isinstance(size, list | tuple) else (size, size)
    shape = (unet.config.in_channels, *size)
    noise = torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(int(s)))
                       for s in seeds])
    calib = torch.randn((calib_samples, *shape), generator=torch.Generator().manual_seed(1234))
    memo: dict = {}
    counts = {}
    for name, point in points.items():
        method = point.method_config(calib_samples)
        sampler = prepare_cachequant(unet, scheduler, steps, method, calib, {}, memo)
        with torch.no_grad():
            x = sampler.sample(noise, {})
        imgs = ((x.float().cpu() + 1) / 2).clamp(0, 1).numpy()
        write_folder(out, {name: dict(zip(sample_ids(seeds), imgs, strict=True))}, upscale=upscale)
        counts[name] = len(seeds)
    return counts
