"""QDrop: block reconstruction with randomly dropped activation quantization.

Wei et al., "QDrop: Randomly Dropping Quantization for Extremely Low-bit Post-Training
Quantization", arXiv 2203.05740; official code `wimh966/QDrop` (`qdrop/solver/recon.py`,
`qdrop/quantization/fake_quant.py`). Follows the official code: weights (AdaRound) and activation
steps (LSQ, lr 4e-5) learned jointly per block with activation quantization on; inside the block each
activation is quantized with probability p = 0.5 and the block input is an element-wise mix of the
quantized-model and FP-model inputs with the same p, the quantizer that takes the block input reusing
that mix's mask (each element it emits is Q(x_q) or x_fp, `QuantizerBase.mix`); after each block p
is reset to 1. Activation ranges are observed with every fake-quant off
(`calib_weights_quantized=False`, `enable_calibration_woquantization`) [code].
Iterations default to 200 per block at tiny scale (paper: 20 000).
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.ptq.common import ReconPTQConfig, register_ptq
from methods.quant import calibrate, quantize_
from methods.quant.recon import ReconEngine, default_units


@dataclass(frozen=True)
class QDropConfig(ReconPTQConfig):
    drop_prob: float = 0.5
    calib_weights_quantized: bool = False


@register_ptq("qdrop", QDropConfig, "joint block reconstruction with QDrop p=0.5")
def run_qdrop(model, calib_x, config: QDropConfig, seed, forward_fn):
    quantize_(model, config.quant_config())
    calibrate(model, calib_x, config.calib_batch, forward_fn, config.calib_weights_quantized)
    engine = ReconEngine(model, calib_x, config.recon_config(), seed, forward_fn)
    return engine.reconstruct(default_units(model, calib_x, "block"))
