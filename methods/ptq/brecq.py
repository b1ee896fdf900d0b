"""BRECQ: block-wise reconstruction.

Li et al., "BRECQ: Pushing the Limit of Post-Training Quantization by Block Reconstruction",
arXiv 2102.05426; official code `yhhhli/BRECQ` (`main_imagenet.py`, `quant/block_recon.py`).
Follows the official code's default flow: (1) AdaRound on the weights of each block with activation
quantization off (`opt_mode='mse'`, no Fisher weighting), (2) then LSQ activation steps per block
with the rounding fixed (act lr 4e-4, activation ranges from the Lp search with p = 2.4),
first/last layer 8 bits. Units: residual/transformer blocks, otherwise each quantized layer with the
BN/ReLU after it, other layers alone [our unit mapping for non-ResNet models]. Iterations default to
200 per block per stage at tiny scale (paper: 20 000 weight / 5 000 activation).
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.ptq.common import ReconPTQConfig, register_ptq
from methods.quant import calibrate, quantize_, set_quant_state
from methods.quant.recon import ReconEngine, default_units


@dataclass(frozen=True)
class BRECQConfig(ReconPTQConfig):
    a_observer: str = "mse"
    act_lr: float = 4e-4
    a_p: float = 2.4


@register_ptq("brecq", BRECQConfig, "block reconstruction: weights, then activation steps")
def run_brecq(model, calib_x, config: BRECQConfig, seed, forward_fn):
    quantize_(model, config.quant_config(a_p=config.a_p))
    calibrate(model, calib_x, config.calib_batch, forward_fn, config.calib_weights_quantized)
    units = default_units(model, calib_x, "block")
    set_quant_state(model, weight=True, act=False)
    stats = ReconEngine(model, calib_x, config.recon_config(learn_acts=False), seed, forward_fn).reconstruct(
        units
    )
    set_quant_state(model, weight=True, act=True)
    stats += ReconEngine(
        model, calib_x, config.recon_config(learn_weights=False), seed + 1, forward_fn
    ).reconstruct(units)
    return stats
