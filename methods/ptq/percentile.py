"""Percentile PTQ: activation ranges clipped at the best of the {0.999, 0.9999, 0.99999} percentiles
(or min-max) by MSE, as in Q-Diffusion's / CacheQuant's activation initialisation [code]; weights per
channel by the 40-candidate MSE search. No reconstruction."""

from __future__ import annotations

from dataclasses import dataclass

from methods.ptq.common import PTQConfig, register_ptq
from methods.quant import calibrate, quantize_


@dataclass(frozen=True)
class PercentileConfig(PTQConfig):
    w_observer: str = "mse"
    a_observer: str = "percentile"


@register_ptq("percentile", PercentileConfig, "percentile-clipped activations, MSE weights")
def run_percentile(model, calib_x, config: PercentileConfig, seed, forward_fn):
    quantize_(model, config.quant_config())
    calibrate(model, calib_x, config.calib_batch, forward_fn)
    return []
