"""Multiply-accumulate (MAC) and bit-operation (BOP) counts of a (fake-)quantized model.

BOPs = MACs x w_bits x a_bits per layer (the convention of e.g. "Bayesian Bits", arXiv 2005.07093);
for an activation-activation product (QuantMatMul) the two operand bit widths are used; layers in
full precision count 32 x 32. Counts are per sample, measured with forward hooks on one batch
[our design]. Fake quantization gives no CPU speed-up, so these counts are what tests report.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from methods.quant.modules import QuantConv2d, QuantLinear, QuantMatMul, _QuantWeightLayer

FP_BITS = 32


def _bits(q) -> int:
    return q.bits if q.enabled else FP_BITS


def _layer_macs(m: nn.Module, inp: tuple, out: torch.Tensor) -> int:
    if isinstance(m, (nn.Linear, QuantLinear)):
        return out.numel() * m.in_features
    if isinstance(m, (nn.Conv2d, QuantConv2d)):
        k = math.prod(m.kernel_size) * (m.in_channels // m.groups)
        return out.numel() * k
    a, _ = inp
    return out.numel() * a.shape[-1]


@torch.no_grad()
def count_macs_bops(model: nn.Module, example: torch.Tensor) -> dict:
    """Per-sample MACs and BOPs of every Linear/Conv/QuantMatMul, plus totals."""
    rows: list[dict] = []
    hooks = []

    def hook(name):
        def fn(m, inp, out):
            macs = _layer_macs(m, inp, out) // max(example.shape[0], 1)
            if isinstance(m, _QuantWeightLayer):
                wb, ab = _bits(m.w_quant), _bits(m.a_quant)
            elif isinstance(m, QuantMatMul):
                wb, ab = _bits(m.qa), _bits(m.qb)
            else:
                wb, ab = FP_BITS, FP_BITS
            rows.append({"name": name, "macs": macs, "w_bits": wb, "a_bits": ab, "bops": macs * wb * ab})

        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, _QuantWeightLayer, QuantMatMul)):
            hooks.append(m.register_forward_hook(hook(name)))
    try:
        model(example)
    finally:
        for h in hooks:
            h.remove()
    return {
        "layers": rows,
        "macs": sum(r["macs"] for r in rows),
        "bops": sum(r["bops"] for r in rows),
        "fp_bops": sum(r["macs"] for r in rows) * FP_BITS * FP_BITS,
    }
