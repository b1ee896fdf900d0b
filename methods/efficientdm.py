"""EfficientDM baseline: quantization-aware LoRA on the quantized weights, temporal LSQ activation
steps, distilled from the FP model on FP-generated calibration data.

Paper: He, Liu, Wu, Zhou, Zhuang, "EfficientDM: Efficient Quantization-Aware Fine-Tuning of Low-Bit
Diffusion Models", arXiv 2310.03270 (ICLR 2024). Its code was not read here; the side-by-side role
is the one DilateQuant's paper gives it (reference/quant.md § 4, § 7).

* [paper] QALoRA: a low-rank update merged into the FP weight *before* fake quantization,
  W_q = Q(W + B A), so the adapter is trained through the quantizer and merges into one quantized
  weight at the end (here `torch.nn.utils.parametrize`, merged by `merge_lora`). B starts at zero
  (LoRA's init), A with Kaiming-uniform [inferred from LoRA].
* [paper] TALSQ: activation steps learned with LSQ, one per timestep (the toolbox's
  `TimestepQuantizer` through `unet_units.TemporalActQuant`, the same quantizer DilateQuant's TPQ
  uses); zero points fixed [inferred].
* [inferred] Distillation: MSE between the FP and quantized U-Net outputs (the noise prediction) on
  the (x_t, t) calibration samples, end to end (one unit covering the whole U-Net); weight steps
  fixed at their MSE-grid calibration; rank 4, LoRA lr 1e-3, step lr 1e-4 (tiny-scale choices);
  first/last layer at 8 bits; `iters` is the total number of optimizer steps, so a sweep gives
  it the same budget as DilateQuant's `iters` x units.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from methods.config_dict import ConfigDict
from methods.dilatequant import UNET_QAT_BITS, calibration_data, check_budget, temporal_qmodel
from methods.errors import ConfigError
from methods.quant import QuantConfig, check_ready_for_eval, finalize_for_eval
from methods.quant.bits import canonical_bits, parse_bits
from methods.quant.modules import _QuantWeightLayer
from methods.quant.unet_units import (
    CalibSet,
    StepIndex,
    TemporalActQuant,
    TemporalSampler,
    calibrate_temporal,
    check_unet,
    distill,
    stop_learning,
    unit_names,
)


class LoRADelta(nn.Module):
    """Parametrization W -> W + B A (B: (O, r), A: (r, K * taps)), reshaped to the weight's shape."""

    def __init__(self, weight: torch.Tensor, rank: int) -> None:
        super().__init__()
        out, fan_in = weight.shape[0], weight[0].numel()
        r = max(1, min(rank, out, fan_in))
        self.A = nn.Parameter(torch.empty(r, fan_in, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(out, r, dtype=weight.dtype))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (self.B @ self.A).reshape(w.shape)


def add_lora(model: nn.Module, rank: int) -> list[LoRADelta]:
    """A LoRA parametrization on every quantized layer's weight; returns the adapters."""
    out = []
    for m in model.modules():
        if isinstance(m, _QuantWeightLayer):
            delta = LoRADelta(m.weight.detach(), rank)
            parametrize.register_parametrization(m, "weight", delta)
            out.append(delta)
    return out


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its weight (one plain weight per layer again); returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, _QuantWeightLayer) and parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            n += 1
    return n


@dataclass(frozen=True)
class EfficientDMConfig(ConfigDict):
    """bits; lora_rank / lora_lr; quant_lr (activation steps); tpq (per-step steps, TALSQ); iters
    (total optimizer steps) / batch_size; calib_size / trajectories as DilateQuant's."""

    bits: str = "w4a4"
    lora_rank: int = 4
    lora_lr: float = 1e-3
    quant_lr: float = 1e-4
    tpq: bool = True
    iters: int = 900
    batch_size: int = 32
    calib_size: int = 256
    trajectories: int = 32
    a_observer: str = "percentile"
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", canonical_bits(self.bits, **UNET_QAT_BITS, who="EfficientDM"))
        if self.lora_rank < 1:
            raise ConfigError(f"lora_rank must be >= 1, got {self.lora_rank}.")
        check_budget(self, "EfficientDMConfig")
        if self.version != 1:
            raise ConfigError(f"EfficientDMConfig version {self.version} is unknown; this code reads 1.")

    def quant_config(self) -> QuantConfig:
        w, a = parse_bits(self.bits).wa
        return QuantConfig(w_bits=w, a_bits=a, a_observer=self.a_observer, quant_matmul=False)


def _lora_groups(cfg: EfficientDMConfig):
    def groups(mods: list[nn.Module]) -> list[dict]:
        adapters = [p for mod in mods for m in mod.modules() if isinstance(m, LoRADelta) for p in (m.A, m.B)]
        steps = []
        for mod in mods:
            for m in mod.modules():
                if isinstance(m, TemporalActQuant):
                    steps += m.tq.learn(step=True, zero=False)
        for p in adapters:
            p.requires_grad_(True)
        return [{"params": adapters, "lr": cfg.lora_lr},
                {"params": steps, "lr": cfg.quant_lr, "positive": True}]

    return groups


def prepare_efficientdm(unet: nn.Module, scheduler: Any, steps: int, config: EfficientDMConfig,
                        calib: CalibSet) -> TemporalSampler:
    """Quantize a copy of `unet`, calibrate, train LoRA + temporal steps end to end, merge."""
    t0 = time.perf_counter()
    names = unit_names(unet)
    index = StepIndex()
    q = temporal_qmodel(unet, config.quant_config(), steps, index, config.tpq)
    calibrate_temporal(q, calib, index)
    add_lora(q, config.lora_rank)
    units = distill(q, unet, calib, [names], _lora_groups(config), iters=config.iters,
                    batch_size=config.batch_size, index=index, seed=config.seed)
    merged = merge_lora(q)
    stop_learning(q)
    finalize_for_eval(q)
    check_ready_for_eval(q)
    report = {"units": units, "lora_layers": merged, "optimizer_steps": config.iters,
              "quantize_seconds": time.perf_counter() - t0}
    return TemporalSampler(q, scheduler, steps, index, report=report)


def efficientdm_method(unet, scheduler, steps, config=None, calib_noise=None, cond=None) -> TemporalSampler:
    """`DIFFUSION_METHODS`-shaped entry (unconditional UNet2DModel only)."""
    config = config or EfficientDMConfig()
    if cond:
        raise ConfigError(f"EfficientDM here takes unconditional U-Nets; got conditioning {sorted(cond)}.")
    check_unet(unet)
    calib = calibration_data(unet, scheduler, steps, config, calib_noise)
    return prepare_efficientdm(unet, scheduler, steps, config, calib)
