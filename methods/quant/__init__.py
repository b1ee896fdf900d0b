"""The quantization toolbox shared by every PTQ method of evfarm (reference/quant.md § 1).

Layout:

* `primitives`  pure uniform-affine quantize/dequantize/fake-quant, granularity table, STE, LSQ.
* `observers`   min-max, running (EMA) min-max, percentile and MSE/Lp range estimators.
* `quantizers`  modules: `UniformQuantizer` (observer / LSQ / QDrop), `AdaRound`, `Log2Quantizer`
                (adaptive base, PTQ4SAM AGQ / RepQ-ViT log-sqrt2), `TimestepQuantizer`.
* `config`      the frozen `QuantConfig`.
* `modules`     `QuantLinear`, `QuantConv2d`, `QuantMatMul`, quantized timm / torch attention.
* `api`         `quantize_`, `calibrate`, quantizer switches, the bits-per-module report.
* `recon`       the block-reconstruction engine (AdaRound + LSQ against a loss callback, QDrop).
* `hygiene`     `check_ready_for_eval` / `finalize_for_eval` (the PTQ4SAM drop-probability bug).
* `counts`      MAC and BOP counts.

The PTQ methods built on it live one per file in `methods/ptq/` and register in
`methods.ptq.PTQ_METHODS`.
"""

from methods.quant.api import (
    bits_report,
    calibrate,
    format_bits_report,
    iter_quantizers,
    quant_disabled,
    quant_layers,
    quantize_,
    set_drop_prob,
    set_quant_state,
)
from methods.quant.config import QuantConfig
from methods.quant.counts import count_macs_bops
from methods.quant.hygiene import QuantStateError, check_ready_for_eval, finalize_for_eval

__all__ = [
    "QuantConfig",
    "QuantStateError",
    "bits_report",
    "calibrate",
    "check_ready_for_eval",
    "count_macs_bops",
    "finalize_for_eval",
    "format_bits_report",
    "iter_quantizers",
    "quant_disabled",
    "quant_layers",
    "quantize_",
    "set_drop_prob",
    "set_quant_state",
]
