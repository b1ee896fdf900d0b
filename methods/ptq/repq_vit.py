"""RepQ-ViT: scale re-parameterisation for post-LayerNorm and post-softmax activations.

Li et al., "RepQ-ViT: Scale Reparameterization for Post-Training Quantization of Vision
Transformers", arXiv 2212.08254; official code `zkkli/RepQ-ViT` (`classification/test_quant.py`).

* Post-LayerNorm activations [paper + code]: calibrate a per-channel asymmetric quantizer (step_c,
  zero_c) on the LayerNorm output, then fold r1 = step_c / mean(step) into the LayerNorm affine
  and the consuming Linear's weight, and the zero-point offsets into the LayerNorm bias and the
  Linear bias, so inference uses one per-tensor quantizer. With x' = x / r1 + mean(step) * r2,
  r2 = zero_c - zbar: gamma' = gamma / r1, beta' = beta / r1 + mean(step) * r2,
  W' = W diag(r1), b' = b - W' (mean(step) * r2). [ours] zbar = round(mean(zero_c)) (the official
  code keeps the non-integer mean), which makes the per-tensor quantizer reproduce the per-channel
  codes exactly, not only approximately; the FP function is unchanged either way (tested to 1e-5).
  The LayerNorm itself stays FP; only its output is quantized (RepQ-ViT issue #1).
* Post-softmax [paper + code]: log-sqrt(2) quantizer (tau = 2 of `Log2Quantizer`), switched to its
  log2 shift form (integer shift + sqrt(2) multiplier for odd codes) for inference (issue #12).
* Weights per output channel, min-max; 32 calibration images in the paper. No reconstruction.
LayerNorm -> Linear pairs are found by tensor identity on a forward pass (the Linear's input *is*
the LayerNorm's output) [our design]; the re-parameterised model is checked to equal the original
in FP and the method refuses to continue otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from methods.errors import ConfigError
from methods.ptq.common import PTQConfig, register_ptq
from methods.quant import calibrate, quant_disabled, quantize_
from methods.quant.modules import QuantLinear
from methods.quant.observers import Observer
from methods.quant.primitives import Granularity, choose_qparams, to_blocks
from methods.quant.quantizers import Log2Quantizer

CHANNEL_LAST = Granularity("channel", axis=-1)


@dataclass(frozen=True)
class RepQViTConfig(PTQConfig):
    softmax_quant: str = "log_sqrt2"


@torch.no_grad()
def find_norm_linear_pairs(model: nn.Module, example: torch.Tensor, forward_fn) -> dict[str, list[str]]:
    """LayerNorm name -> names of the QuantLinears that consume its output tensor directly."""
    outputs: dict[int, tuple[str, torch.Tensor]] = {}  # keeps the tensor alive so its id is not reused
    pairs: dict[str, list[str]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm):
            hooks.append(
                m.register_forward_hook(lambda _m, _a, out, n=name: outputs.__setitem__(id(out), (n, out)))
            )
        elif isinstance(m, QuantLinear):

            def pre(_m, args, n=name):
                src, tensor = outputs.get(id(args[0]), (None, None))
                if tensor is args[0] and n not in pairs.setdefault(src, []):
                    pairs[src].append(n)

            hooks.append(m.register_forward_pre_hook(pre))
    try:
        with quant_disabled(model):
            forward_fn(model, example[:2])
    finally:
        for h in hooks:
            h.remove()
    return {k: v for k, v in pairs.items() if v}


@torch.no_grad()
def channel_qparams(model, norm: nn.LayerNorm, calib_x, bits, symmetric, observer, batch, forward_fn):
    """Per-channel (step_c, zero_c) of a LayerNorm's output over the calibration set (FP model)."""
    obs = Observer(observer, bits, symmetric)
    h = norm.register_forward_hook(lambda _m, _a, out: obs.update(to_blocks(out, CHANNEL_LAST)))
    try:
        with quant_disabled(model):
            for i in range(0, calib_x.shape[0], batch):
                forward_fn(model, calib_x[i : i + batch])
    finally:
        h.remove()
    step, zero = choose_qparams(*obs.range(), bits, symmetric)
    return step.reshape(-1), zero.reshape(-1)


def set_per_channel(linears: list[QuantLinear], step: torch.Tensor, zero: torch.Tensor) -> None:
    """Give the consumers a per-channel input quantizer (the pre-re-parameterisation model)."""
    for lin in linears:
        lin.a_quant.granularity = CHANNEL_LAST
        lin.a_quant.set_qparams(step, zero)


@torch.no_grad()
def reparameterize(
    norm: nn.LayerNorm, linears: list[QuantLinear], step: torch.Tensor, zero: torch.Tensor
) -> None:
    """Fold per-channel (step, zero) into the LayerNorm affine and the Linears (see module docstring)."""
    if norm.weight is None or norm.bias is None:
        raise ConfigError("RepQ-ViT needs an affine LayerNorm (weight and bias) to fold scales into.")
    sbar = step.mean()
    zbar = torch.round(zero.mean())
    r1 = step / sbar
    offset = sbar * (zero - zbar)
    norm.weight.div_(r1)
    norm.bias.div_(r1).add_(offset)
    for lin in linears:
        lin.weight.mul_(r1.reshape(1, -1))
        shift = lin.weight @ offset
        if lin.bias is None:
            lin.bias = nn.Parameter(-shift)
        else:
            lin.bias.sub_(shift)
        lin.a_quant.granularity = Granularity("tensor")
        lin.a_quant.set_qparams(sbar.reshape(1, 1), zbar.reshape(1, 1))


@torch.no_grad()
def repq_init(
    model: nn.Module, calib_x: torch.Tensor, config: PTQConfig, forward_fn, check_tol: float = 1e-4
):
    """Quantize, calibrate and re-parameterise `model` in place; returns the LayerNorm -> Linear pairs."""
    quantize_(model, config.quant_config())
    calibrate(model, calib_x, config.calib_batch, forward_fn)
    probe = calib_x[: min(16, calib_x.shape[0])]
    with quant_disabled(model):
        before = forward_fn(model, probe)
    named = dict(model.named_modules())
    pairs = find_norm_linear_pairs(model, calib_x, forward_fn)
    for norm_name, lin_names in pairs.items():
        linears = [named[n] for n in lin_names]
        q = linears[0].a_quant
        step, zero = channel_qparams(
            model,
            named[norm_name],
            calib_x,
            q.bits,
            q.symmetric,
            q.observer_kind,
            config.calib_batch,
            forward_fn,
        )
        reparameterize(named[norm_name], linears, step, zero)
        for lin in linears:
            lin.calibrate_weight()  # weight ranges of the re-scaled weights
    for m in model.modules():
        if isinstance(m, Log2Quantizer) and m.tau == 2 and m.taus == (2,):
            m.shift_form = True
    with quant_disabled(model):
        after = forward_fn(model, probe)
    err = float((after - before).abs().max() / before.abs().max().clamp_min(1e-12))
    if err > check_tol:
        raise ConfigError(
            f"RepQ-ViT re-parameterisation changed the FP model (relative error {err:.2e} > {check_tol}); "
            "a LayerNorm output is probably consumed by something other than the paired Linears. "
            "Exclude that LayerNorm's consumers with filter_fn."
        )
    return pairs


@register_ptq("repq_vit", RepQViTConfig, "RepQ-ViT LayerNorm / log-sqrt2 re-parameterisation")
def run_repq_vit(model, calib_x, config: RepQViTConfig, seed, forward_fn):
    pairs = repq_init(model, calib_x, config, forward_fn)
    return [{"unit": f"reparam:{k}->{','.join(v)}"} for k, v in pairs.items()]
