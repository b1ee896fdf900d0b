"""AdaRound: layer-wise learned rounding.

Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", arXiv 2004.10568.
Follows the paper: per layer, minimise ||W x - W^ x||^2 + lambda * sum(1 - |2h(V) - 1|^beta) over V,
beta 20 -> 2 after a 20 % warm-up, lambda = 0.01, Adam lr 1e-3; the layer input comes from the
already quantized preceding layers (the paper's "asymmetric" variant). Weights per channel with the
MSE range; activations keep their calibrated (min-max) ranges and are not learned [paper: AdaRound
is a weight method]. Iterations default to 200 per layer at tiny scale (paper: 20 000).
"""

from __future__ import annotations

from methods.ptq.common import ReconPTQConfig, register_ptq
from methods.quant import calibrate, quantize_
from methods.quant.recon import ReconEngine, default_units


@register_ptq("adaround", ReconPTQConfig, "layer-wise AdaRound on weights")
def run_adaround(model, calib_x, config: ReconPTQConfig, seed, forward_fn):
    quantize_(model, config.quant_config())
    calibrate(model, calib_x, config.calib_batch, forward_fn, config.calib_weights_quantized)
    engine = ReconEngine(
        model, calib_x, config.recon_config(learn_acts=False, drop_prob=1.0), seed, forward_fn
    )
    return engine.reconstruct(default_units(model, calib_x, "layer"))
