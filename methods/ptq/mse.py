"""MSE PTQ: weight and activation ranges by the Lp grid search over 40 shrink factors
(reference/quant.md § 1.1; CacheQuant `quant/quant_layer.py` [code]; p = 2). No reconstruction."""

from __future__ import annotations

from dataclasses import dataclass

from methods.ptq.common import PTQConfig, register_ptq
from methods.quant import calibrate, quantize_


@dataclass(frozen=True)
class MSEConfig(PTQConfig):
    w_observer: str = "mse"
    a_observer: str = "mse"


@register_ptq("mse", MSEConfig, "MSE grid-search ranges, no reconstruction")
def run_mse(model, calib_x, config: MSEConfig, seed, forward_fn):
    quantize_(model, config.quant_config())
    calibrate(model, calib_x, config.calib_batch, forward_fn)
    return []
