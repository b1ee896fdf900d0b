"""`quantize_(model, config, filter_fn)`, calibration, quantizer switches and the bits report.

Modelled on torchao's `quantize_(model, config, filter_fn)` (in-place module swap with a filter
taking `(module, fully_qualified_name)`) [code: torchao]; what is swapped and how is our design:

* `nn.Linear` -> `QuantLinear`, `nn.Conv2d` -> `QuantConv2d`;
* timm `Attention` -> `QuantTimmAttention` (its qkv/proj Linears are then swapped too);
* `nn.MultiheadAttention` -> `QuantMHA` (unsupported variants are left in FP and listed in the
  report as 'fp');
* the first and last Linear/Conv (registration order) get `config.first_last_bits`.

Calibration order: weight ranges from the weights; then activation ranges from calibration batches
with activation quantization off and weight quantization on (BRECQ's order [code: `yhhhli/BRECQ`
`main_imagenet.py`]) or, with ``weights_quantized=False``, with every fake-quant off (QDrop's
`enable_calibration_woquantization` for both weight and activation quantizers [code:
`wimh966/QDrop`]).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from methods.errors import ConfigError
from methods.quant.config import QuantConfig
from methods.quant.modules import (
    QuantConv2d,
    QuantLinear,
    QuantMatMul,
    QuantMHA,
    QuantTimmAttention,
    _QuantWeightLayer,
    mha_supported,
)
from methods.quant.quantizers import QuantizerBase

FilterFn = Callable[[nn.Module, str], bool]


def _timm_attention_cls():
    try:
        from timm.models.vision_transformer import Attention
    except ImportError:  # timm is an optional dependency of the maths
        return None
    return Attention


def _weight_layer_names(model: nn.Module, filter_fn: FilterFn | None) -> list[str]:
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, (nn.Linear, nn.Conv2d)) and (filter_fn is None or filter_fn(m, n))
    ]


def quantize_(model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None = None) -> nn.Module:
    """Swap layers of `model` in place for fake-quantized ones; returns `model`.

    `filter_fn(module, name) -> bool` selects which Linear/Conv/attention modules are wrapped (all by
    default). Quantizers start uncalibrated (they pass values through) until `calibrate` runs.
    """
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"quantize_ expects a QuantConfig, got {type(config).__name__}.")
    if any(isinstance(m, _QuantWeightLayer) for m in model.modules()):
        raise ConfigError("This model is already quantized; call quantize_ on a fresh copy of the FP model.")
    layers = _weight_layer_names(model, filter_fn)
    edge = {layers[0], layers[-1]} if layers and config.first_last_bits is not None else set()
    attn_cls = _timm_attention_cls()

    def convert(parent: nn.Module, prefix: str) -> None:
        for child_name, child in list(parent.named_children()):
            name = f"{prefix}{child_name}"
            keep = filter_fn is None or filter_fn(child, name)
            new = None
            if keep and config.quant_matmul and attn_cls is not None and isinstance(child, attn_cls):
                new = QuantTimmAttention(child, config.a_bits, config)
            elif (
                keep
                and config.quant_matmul
                and isinstance(child, nn.MultiheadAttention)
                and mha_supported(child)
            ):
                new = QuantMHA(child, config.a_bits, config)
            elif keep and isinstance(child, (nn.Linear, nn.Conv2d)):
                bits = config.first_last_bits if name in edge else None
                wb, ab = (bits, bits) if bits is not None else (config.w_bits, config.a_bits)
                cls = QuantLinear if isinstance(child, nn.Linear) else QuantConv2d
                new = cls(child, wb, ab, config)
            if new is not None:
                setattr(parent, child_name, new)
                child = new
            if not isinstance(child, _QuantWeightLayer):
                convert(child, f"{name}.")

    convert(model, "")
    return model


def iter_quantizers(model: nn.Module, role: str | None = None) -> Iterator[tuple[str, QuantizerBase]]:
    """Every quantizer module (optionally only role 'weight' or 'act')."""
    for name, m in model.named_modules():
        if isinstance(m, QuantizerBase) and (role is None or getattr(m, "role", "act") == role):
            yield name, m


def quant_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, m in model.named_modules():
        if isinstance(m, (_QuantWeightLayer, QuantMatMul)):
            yield name, m


def set_quant_state(model: nn.Module, weight: bool | None = None, act: bool | None = None) -> None:
    """Switch weight and/or activation quantizers on or off (None leaves them as they are)."""
    for _, q in iter_quantizers(model):
        on = weight if getattr(q, "role", "act") == "weight" else act
        if on is not None:
            q.enabled = on


@contextmanager
def quant_disabled(model: nn.Module):
    """Run the model in full precision inside the block; restores every quantizer's switch after."""
    saved = [(q, q.enabled) for _, q in iter_quantizers(model)]
    try:
        for q, _ in saved:
            q.enabled = False
        yield model
    finally:
        for q, on in saved:
            q.enabled = on


def set_drop_prob(model: nn.Module, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"drop probability must be in [0, 1], got {p}.")
    for _, q in iter_quantizers(model, "act"):
        q.drop_prob = p


def batches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size]


@torch.no_grad()
def calibrate(
    model: nn.Module,
    calib_x: torch.Tensor,
    batch_size: int = 64,
    forward_fn: Callable[[nn.Module, torch.Tensor], object] | None = None,
    weights_quantized: bool = True,
) -> nn.Module:
    """Weight ranges from the weights, then activation ranges from `calib_x` observed with weight
    quantization on (`weights_quantized`) or off (see module docstring); ends with both on."""
    forward_fn = forward_fn or (lambda m, xb: m(xb))
    for _, layer in quant_layers(model):
        if isinstance(layer, _QuantWeightLayer):
            layer.calibrate_weight()
    acts = [q for _, q in iter_quantizers(model, "act")]
    set_quant_state(model, weight=weights_quantized, act=False)
    for q in acts:
        q.start_observing()
    was_training = model.training
    model.eval()
    for xb in batches(calib_x, batch_size):
        forward_fn(model, xb)
    for q in acts:
        q.finish_observing()
    model.train(was_training)
    set_quant_state(model, weight=True, act=True)
    return model


def bits_report(model: nn.Module) -> list[dict]:
    """One row per wrapped layer/product: name, kind, w_bits, a_bits (None where not quantized)."""
    rows = []
    for name, m in quant_layers(model):
        w = m.w_bits if isinstance(m, _QuantWeightLayer) and m.w_quant.enabled else None
        a = (
            m.a_bits
            if any(
                q.enabled
                for q in m.modules()
                if isinstance(q, QuantizerBase) and getattr(q, "role", "act") == "act"
            )
            else None
        )
        rows.append({"name": name, "kind": type(m).__name__, "w_bits": w, "a_bits": a})
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.MultiheadAttention)):
            rows.append({"name": name, "kind": type(m).__name__ + " (fp)", "w_bits": None, "a_bits": None})
    return rows


def format_bits_report(rows: list[dict]) -> str:
    width = max((len(r["name"]) for r in rows), default=4)
    lines = [f"{'module':<{width}}  {'kind':<18} w_bits a_bits"]
    for r in rows:
        w = "fp" if r["w_bits"] is None else str(r["w_bits"])
        a = "fp" if r["a_bits"] is None else str(r["a_bits"])
        lines.append(f"{r['name']:<{width}}  {r['kind']:<18} {w:>6} {a:>6}")
    return "\n".join(lines)


__all__ = [
    "QuantConv2d",
    "QuantLinear",
    "QuantMHA",
    "QuantMatMul",
    "QuantTimmAttention",
    "batches",
    "bits_report",
    "calibrate",
    "format_bits_report",
    "iter_quantizers",
    "quant_disabled",
    "quant_layers",
    "quantize_",
    "set_drop_prob",
    "set_quant_state",
]
