"""`DIFFUSION_METHODS`: the ways to prepare a diffusion U-Net for faster sampling, one entry type.

Every entry has one signature, `prepare(unet, scheduler, steps, config=None, calib_noise=None,
cond=None) -> DiffusionSampler`, and the sampler it returns has `sample(noise, cond=None) -> x_0`.
A method that needs no calibration (DeepCache) ignores `calib_noise`; one that draws its own
calibration noise when none is given says with which seed. The methods live one per file and are
registered here, so importing this module registers all of them (their files do not import it):

- "deepcache": feature caching (`methods/deepcache.py`, arXiv:2312.00858);
- "qdiffusion": timestep-aware PTQ with split shortcuts (`methods/qdiffusion.py`, arXiv:2302.04304);
- "cachequant": caching + quantization with DPS and the two corrections (`methods/cachequant.py`,
  arXiv:2503.01323).

    prepare = DIFFUSION_METHODS.create("cachequant", interval=3, bits="w8a8")  # config checked here
    x0 = prepare(unet, scheduler, steps).sample(noise)

The entry type and the registry are our design [inferred]; the papers are cited in each file.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from methods.cachequant import CacheQuantConfig, cachequant_method
from methods.deepcache import DeepCacheConfig, deepcache_method
from methods.diffusion_qat import DiffusionQATConfig, qat_method
from methods.dilatequant import DilateQuantConfig, dilatequant_method
from methods.efficientdm import EfficientDMConfig, efficientdm_method
from methods.qdiffusion import QDiffusionConfig, qdiffusion_method
from methods.registry import Registry, config_from_dict


@runtime_checkable
class DiffusionSampler(Protocol):
    """A prepared configuration: `sample(noise, cond=None)` runs the whole sampling loop."""

    def sample(self, noise: torch.Tensor, cond: dict | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class DiffusionMethod:
    """A registered method: its config class and `prepare(unet, scheduler, steps, config, ...)`."""

    name: str
    config_cls: type
    prepare: Callable[..., DiffusionSampler]
    description: str = ""

    def create(self, **config: Any) -> Callable[..., DiffusionSampler]:
        """This method with `config` bound (unknown keys refused); call it as
        `prepare(unet, scheduler, steps, calib_noise=None, cond=None)`."""
        return functools.partial(self.prepare, config=config_from_dict(self.config_cls, config))


DIFFUSION_METHODS: Registry[DiffusionMethod] = Registry("diffusion method", DiffusionMethod)

for _method in (
    DiffusionMethod("deepcache", DeepCacheConfig, deepcache_method, "reuse high-level U-Net features"),
    DiffusionMethod("qdiffusion", QDiffusionConfig, qdiffusion_method, "timestep-aware PTQ, split shortcuts"),
    DiffusionMethod("cachequant", CacheQuantConfig, cachequant_method, "DPS caching + quantization, DEC"),
    DiffusionMethod("dilatequant", DilateQuantConfig, dilatequant_method, "weight dilation + TPQ + BKD"),
    DiffusionMethod("efficientdm", EfficientDMConfig, efficientdm_method, "QALoRA + temporal LSQ"),
    DiffusionMethod("diffusion_qat", DiffusionQATConfig, qat_method, "full LSQ QAT (cost ceiling)"),
):
    DIFFUSION_METHODS.register(_method.name)(_method)
