"""Q-Diffusion-style PTQ baseline for diffusers U-Nets: timestep-aware calibration and split shortcut
quantization.

Paper: Li et al., "Q-Diffusion: Quantizing Diffusion Models", arXiv 2302.04304 (ICCV 2023);
official code `Xiuyu-Li/q-diffusion` (calibration code only since PR #20).

* [paper/code] Time-step-aware calibration: U-Net inputs are collected from full-precision sampling
  trajectories at `cali_st` uniformly spaced steps, `cali_n` samples per step (`--cali_st`,
  `--cali_n`), and one set of activation ranges is calibrated on the union.
* [paper/code] Split shortcut quantization: the tensor entering a U-Net up-block ResBlock is the
  concatenation [upsampled deep feature, skip feature]; the two halves have very different ranges,
  so they get separate activation quantizers (`--split`). We split the input of the ResBlock's 1x1
  `conv_shortcut`, the one layer that consumes the raw concatenation (`conv1` sees it only after
  GroupNorm + SiLU) [inferred for diffusers' module layout].
* [inferred] Weights: asymmetric per-output-channel MSE-grid ranges (the toolbox default), no
  BRECQ/AdaRound reconstruction, so the baseline stays training-free like CacheQuant; activations
  asymmetric per tensor with the percentile/MSE observer (Q-Diffusion's activation init); first and
  last layer at 8 bits (`QuantConfig.first_last_bits`). Weight slices are not split (one per-output
  channel quantizer covers both input halves).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from methods.deepcache import DeepCacheSampler, DeepCacheUNet, sample_loop
from methods.errors import ConfigError
from methods.quant import QuantConfig, calibrate, check_ready_for_eval, finalize_for_eval, quantize_
from methods.quant.modules import QuantConv2d
from methods.quant.quantizers import QuantizerBase


class SplitActQuant(QuantizerBase):
    """Two activation quantizers for the channel halves [:split] and [split:] of a concatenation."""

    def __init__(self, split: int, qa: nn.Module, qb: nn.Module) -> None:
        super().__init__()
        if split < 1:
            raise ConfigError(f"split channel must be >= 1, got {split}.")
        self.split, self.qa, self.qb = split, qa, qb
        self.role = "act"
        self.bits = getattr(qa, "bits", 32)

    def start_observing(self) -> None:  # the children observe
        self.observing = True

    def finish_observing(self) -> None:
        self.observing, self.calibrated = False, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] <= self.split:
            raise ConfigError(f"split quantizer expects more than {self.split} channels, got {x.shape[1]}.")
        if not self.enabled:
            if self.qa.observing or self.qb.observing:  # calibration runs with activations switched off
                self.qa(x[:, : self.split]), self.qb(x[:, self.split:])
            return x
        return torch.cat([self.qa(x[:, : self.split]), self.qb(x[:, self.split:])], dim=1)


@torch.no_grad()
def find_concat_splits(unet: nn.Module, x: torch.Tensor, t: Any, cond: dict | None = None) -> dict[str, int]:
    """{name of an up-block ResBlock's conv_shortcut: channels of the deep half of its input}."""
    seen: dict[int, int] = {}
    hooks = []
    for k, block in enumerate(unet.up_blocks):
        def grab(_m, args, kwargs, k=k):
            h = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            seen[k] = h.shape[1]
        hooks.append(block.register_forward_pre_hook(grab, with_kwargs=True))
    try:
        unet(x[:1], t, **{k: (v[:1] if torch.is_tensor(v) else v) for k, v in (cond or {}).items()})
    finally:
        for h in hooks:
            h.remove()
    splits = {}
    for k, block in enumerate(unet.up_blocks):
        for i, res in enumerate(block.resnets):
            if getattr(res, "conv_shortcut", None) is None:
                continue
            deep = seen[k] if i == 0 else block.resnets[i - 1].out_channels
            if deep < res.in_channels:
                splits[f"up_blocks.{k}.resnets.{i}.conv_shortcut"] = deep
    return splits


def apply_split(qmodel: nn.Module, splits: dict[str, int],
                make_quant: Callable[[QuantConv2d], nn.Module]) -> int:
    """Replace the input quantizer of each named QuantConv2d by a `SplitActQuant`; returns how many."""
    n = 0
    for name, split in splits.items():
        layer = qmodel.get_submodule(name)
        if not isinstance(layer, QuantConv2d):
            continue  # left in FP by the quantization filter
        layer.a_quant = SplitActQuant(split, make_quant(layer), make_quant(layer))
        n += 1
    return n


def _uniform_act(layer: QuantConv2d, cfg: QuantConfig) -> nn.Module:
    from methods.quant.modules import act_quantizer

    return act_quantizer(layer.a_bits, cfg.a_symmetric, cfg.a_observer, cfg.a_p)


@dataclass(frozen=True)
class QDiffusionConfig:
    """W/A bits, calibration steps x samples per step, split shortcut quantization on/off."""

    w_bits: int = 8
    a_bits: int = 8
    cali_st: int = 10
    cali_n: int = 16
    split: bool = True
    a_observer: str = "percentile"
    version: int = 1

    def __post_init__(self) -> None:
        if self.cali_st < 1 or self.cali_n < 1:
            raise ConfigError(f"cali_st and cali_n must be >= 1, got {self.cali_st}, {self.cali_n}.")
        if self.version != 1:
            raise ConfigError(f"QDiffusionConfig version {self.version} is unknown; this code reads 1.")
        self.quant_config()  # validates bits and observer

    def quant_config(self) -> QuantConfig:
        return QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits, a_observer=self.a_observer,
                           quant_matmul=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"w_bits": ("categorical", [4, 8]), "a_bits": ("categorical", [8]),
                "cali_st": ("categorical", [5, 10, 25]), "split": ("categorical", [True, False])}


@torch.no_grad()
def timestep_calibration_set(
    unet: nn.Module, scheduler: Any, noise: torch.Tensor, steps: int, cali_st: int, cond: dict | None = None,
) -> list[tuple[torch.Tensor, Any]]:
    """(x_t, t) from one FP trajectory of `noise` at `cali_st` uniformly spaced step indices."""
    if cali_st > steps:
        raise ConfigError(f"cali_st ({cali_st}) cannot exceed the number of sampling steps ({steps}).")
    picks = set(torch.linspace(0, steps - 1, cali_st).round().long().tolist())
    out: list[tuple[torch.Tensor, Any]] = []

    def rec(i, t, x, _feat, _refreshed):
        if i in picks:
            out.append((x.clone(), t))

    sample_loop(DeepCacheUNet(unet, 0), scheduler, noise, steps, list(range(steps)), cond=cond, record=rec)
    return out


@torch.no_grad()
def qdiffusion_quantize(
    unet: nn.Module, scheduler: Any, steps: int, config: QDiffusionConfig, calib_noise: torch.Tensor,
    cond: dict | None = None,
) -> nn.Module:
    """A calibrated, evaluation-ready fake-quantized copy of `unet` (weights + activations)."""
    cfg = config.quant_config()
    cond = cond or {}
    noise = calib_noise[: config.cali_n]
    calib = timestep_calibration_set(unet, scheduler, noise, steps, config.cali_st, cond)
    qmodel = quantize_(copy.deepcopy(unet), cfg)
    if config.split:
        splits = find_concat_splits(unet, calib[0][0], calib[0][1], cond)
        apply_split(qmodel, splits, lambda layer: _uniform_act(layer, cfg))
    index = torch.arange(len(calib), dtype=torch.float32)

    def forward(m, idx):
        for j in idx.long().tolist():
            x, t = calib[j]
            m(x, t, **cond)

    calibrate(qmodel, index, batch_size=1, forward_fn=forward)
    finalize_for_eval(qmodel)
    check_ready_for_eval(qmodel)
    return qmodel.eval()


def qdiffusion_method(unet, scheduler, steps, config=None, calib_noise=None, cond=None) -> DeepCacheSampler:
    """`DIFFUSION_METHODS` entry (methods/diffusion.py): `qdiffusion_quantize` with defaults
    (calibration noise seeded 0 if not given), sampled at every step."""
    config = config or QDiffusionConfig()
    if calib_noise is None:
        size = unet.config.sample_size
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        calib_noise = torch.randn((config.cali_n, unet.config.in_channels, *size),
                                  generator=torch.Generator().manual_seed(0))
    qmodel = qdiffusion_quantize(unet, scheduler, steps, config, calib_noise, cond)
    return DeepCacheSampler(DeepCacheUNet(qmodel, 0), scheduler, steps, list(range(steps)))
