"""Full quantization-aware training with LSQ for diffusion U-Nets: the cost ceiling beside DilateQuant.

LSQ: Esser et al., "Learned Step Size Quantization", arXiv 1902.08153 [paper]; the QAT baseline of
DilateQuant's tables (arXiv 2409.14307, reference/quant.md § 4.3: CIFAR-10 W4A4 FID 7.30 at 13.9 GPU
hours) [paper]. Its training recipe is not given there, so:

* [inferred] Every raw weight, every per-channel weight step and every activation step trains at
  once, end to end (one unit covering the whole U-Net), against the FP model's noise prediction on
  the same FP-generated calibration samples the other methods get (the paper's QAT trains on the
  dataset; here only calibration data exist, so "full" means all parameters, not all data).
* [inferred] One activation step for all timesteps (plain LSQ; `tpq=True` switches to per-step
  steps), zero points fixed, Adam lr 1e-4 for weights and steps, first/last layer at 8 bits;
  `iters` is the total number of optimizer steps (a sweep sets DilateQuant's iters x units).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from torch import nn

from methods.config_dict import ConfigDict
from methods.dilatequant import (
    UNET_QAT_BITS,
    bkd_param_groups,
    calibration_data,
    check_budget,
    temporal_qmodel,
)
from methods.errors import ConfigError
from methods.quant import QuantConfig, check_ready_for_eval, finalize_for_eval
from methods.quant.bits import canonical_bits, parse_bits
from methods.quant.unet_units import (
    CalibSet,
    StepIndex,
    TemporalSampler,
    calibrate_temporal,
    check_unet,
    distill,
    stop_learning,
    unit_names,
)


@dataclass(frozen=True)
class DiffusionQATConfig(ConfigDict):
    """bits; weight_lr / quant_lr; tpq (False: one LSQ step for all timesteps); iters (total
    optimizer steps) / batch_size; calib_size / trajectories as DilateQuant's."""

    bits: str = "w4a4"
    weight_lr: float = 1e-4
    quant_lr: float = 1e-4
    tpq: bool = False
    iters: int = 900
    batch_size: int = 32
    calib_size: int = 256
    trajectories: int = 32
    a_observer: str = "percentile"
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", canonical_bits(self.bits, **UNET_QAT_BITS, who="QAT"))
        check_budget(self, "DiffusionQATConfig")
        if self.version != 1:
            raise ConfigError(f"DiffusionQATConfig version {self.version} is unknown; this code reads 1.")

    def quant_config(self) -> QuantConfig:
        w, a = parse_bits(self.bits).wa
        return QuantConfig(w_bits=w, a_bits=a, a_observer=self.a_observer, quant_matmul=False)


def prepare_qat(unet: nn.Module, scheduler: Any, steps: int, config: DiffusionQATConfig,
                calib: CalibSet) -> TemporalSampler:
    """Quantize a copy of `unet`, calibrate, train everything end to end with LSQ."""
    t0 = time.perf_counter()
    names = unit_names(unet)
    index = StepIndex()
    q = temporal_qmodel(unet, config.quant_config(), steps, index, config.tpq)
    calibrate_temporal(q, calib, index)
    groups = bkd_param_groups(config.weight_lr, config.quant_lr, learn_zero=False)
    units = distill(q, unet, calib, [names], groups, iters=config.iters, batch_size=config.batch_size,
                    index=index, seed=config.seed)
    stop_learning(q)
    finalize_for_eval(q)
    check_ready_for_eval(q)
    report = {"units": units, "optimizer_steps": config.iters, "quantize_seconds": time.perf_counter() - t0}
    return TemporalSampler(q, scheduler, steps, index, report=report)


def qat_method(unet, scheduler, steps, config=None, calib_noise=None, cond=None) -> TemporalSampler:
    """`DIFFUSION_METHODS`-shaped entry (unconditional UNet2DModel only)."""
    config = config or DiffusionQATConfig()
    if cond:
        raise ConfigError(f"QAT here takes unconditional U-Nets; got conditioning {sorted(cond)}.")
    check_unet(unet)
    calib = calibration_data(unet, scheduler, steps, config, calib_noise)
    return prepare_qat(unet, scheduler, steps, config, calib)
