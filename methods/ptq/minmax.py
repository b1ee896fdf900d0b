"""Min-max PTQ: the plain baseline (no paper of its own; the range estimator of e.g. Jacob et al.,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
arXiv 1712.05877). Weights per output channel, activations per tensor, both from their min/max on
the calibration set; first/last layer at 8 bits. No reconstruction."""

from __future__ import annotations

from methods.ptq.common import PTQConfig, register_ptq
from methods.quant import calibrate, quantize_


@register_ptq("minmax", PTQConfig, "min-max ranges, no reconstruction")
def run_minmax(model, calib_x, config: PTQConfig, seed, forward_fn):
    quantize_(model, config.quant_config())
    calibrate(model, calib_x, config.calib_batch, forward_fn)
    return []
