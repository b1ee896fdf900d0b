"""DilateQuant: weight dilation (WD), the temporal parallel quantizer (TPQ) and block-wise knowledge
distillation (BKD) for diffusion U-Nets.

Paper: Liu, Li, Gu et al., "DilateQuant: Accurate and Efficient Diffusion Quantization via Weight
Dilation", arXiv 2409.14307 (ACM MM 2025; v3 titles it quantization-aware training). The official
repository (`BienLuky/DilateQuant`) could not be read here, so nothing below is tagged [code].
Brief: reference/quant.md § 4 and § 9.3.

Weight dilation (this section of the file):

* [paper] For a Linear/Conv weight W[o, k] (a conv's spatial taps reduced per (o, k)), the input
  channels that hold some output channel's max or min form the saturated set A and keep s_k = 1.
  Every other channel gets the largest scale that keeps every output channel's range:
  s_k1 = min_o W_max[o] / max(W[o, k], 0), s_k2 = min_o W_min[o] / min(W[o, k], 0) (a zero
  denominator gives +inf), s_k = min(s_k1, s_k2). Then W' = W s (per input channel) and X' = X / s:
  the per-output-channel weight range, hence the weight step, is unchanged, and the activation
  range shrinks when the channels holding its extremes are unsaturated.
* [inferred] "The paper's constraint on the dilated range": we read it as s_k >= 1 (dilate, never
  shrink) plus an optional cap `max_scale` (a large s_k multiplies that channel's activation
  rounding error by s_k in the output); `max_scale = inf` is the unconstrained formula. A channel
  whose weights are all zero has s_k = inf in the formula and gets 1 (nothing to dilate). [ours]
  s is taken 1e-6 below the bound so that float32 rounding of W s never widens a weight range.
* [inferred] Layers sharing one input (to_q, to_k, to_v of a self-attention) get one common s,
  computed on their weights stacked along the output axis, because one X / s feeds all three.
* [paper] 1/s must be folded into the producer of X. Per diffusers U-Net layer type [inferred
  from the module graph of `UNet2DModel`, `ResnetBlock2D`, `Attention` with `AttnProcessor2_0`]:

  ====================================  ==============================  =========================
  consumer                              producer of its input           folds?
  ====================================  ==============================  =========================
  attention to_q / to_k / to_v          attention `group_norm` affine   yes: gamma/s, beta/s
  attention to_out.0                    to_v (softmax(QK^T) V is        yes: rows of to_v (and
                                        linear per channel of V)        its bias) divided by s
  ResnetBlock conv1 / conv2             GroupNorm -> SiLU               no (SiLU in between)
  ResnetBlock time_emb_proj             SiLU(time embedding)            no (SiLU)
  ResnetBlock conv_shortcut             residual sum / skip concat      no (a sum of branches)
  down/up-sampler conv                  residual sum (interpolated)     no
  time_embedding.linear_1 / linear_2    sinusoid / SiLU                 no
  conv_in / conv_out                    the image / SiLU(GroupNorm)     no
  ====================================  ==============================  =========================

  `scope="foldable"` (default) dilates only the first two rows, so WD is free at inference as the
  paper says; `scope="all"` [ours, a switch] also dilates every other Linear/Conv with an explicit
  division X / s in front of its activation quantizer (`DilatedInput`), which a deployment would
  have to pay for. Both are float-equivalent (tested to 1e-5 relative).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from methods.errors import ConfigError
from methods.quant.modules import _QuantWeightLayer

WD_SCOPES = ("foldable", "all")


# --------------------------------------------------------------------------------------- WD maths
def _as_out_in_taps(weight: torch.Tensor) -> torch.Tensor:
    """(O, K, taps) view of a Linear (O, K) or Conv (O, K, kh, kw) weight."""
    if weight.dim() < 2:
        raise ConfigError(
            f"weight dilation needs a Linear/Conv weight (O, K, ...), got shape {tuple(weight.shape)}.")
    return weight.detach().reshape(weight.shape[0], weight.shape[1], -1)


def saturated_channels(weight: torch.Tensor) -> torch.Tensor:
    """Bool (K,): input channels holding some output channel's max or min (the paper's set A)."""
    w = _as_out_in_taps(weight)
    ch_max, ch_min = w.amax(2), w.amin(2)  # (O, K)
    w_max, w_min = ch_max.amax(1, keepdim=True), ch_min.amin(1, keepdim=True)
    return ((ch_max == w_max) | (ch_min == w_min)).any(0)


def dilation_scales(weight: torch.Tensor, max_scale: float = math.inf) -> torch.Tensor:
    """s (K,) of weight dilation: 1 on the saturated set A, else min(s_k1, s_k2) clamped to
    [1, max_scale] (module docstring). `weight` may be several layers stacked along axis 0."""
    if not max_scale >= 1.0:
        raise ConfigError(f"max_scale must be >= 1 (WD only dilates), got {max_scale}.")
    w = _as_out_in_taps(weight).double()
    ch_max, ch_min = w.amax(2), w.amin(2)  # (O, K): per (o, k) extremes over the taps
    w_max, w_min = ch_max.amax(1, keepdim=True), ch_min.amin(1, keepdim=True)  # (O, 1)
    inf = torch.full_like(ch_max, math.inf)
    pos, neg = ch_max.clamp(min=0.0), ch_min.clamp(max=0.0)
    s1 = torch.where(pos > 0, w_max / torch.where(pos > 0, pos, 1.0), inf).amin(0)
    s2 = torch.where(neg < 0, w_min / torch.where(neg < 0, neg, -1.0), inf).amin(0)
    s = torch.minimum(s1, s2)
    s = torch.where(torch.isfinite(s), s, torch.ones_like(s))  # an all-zero channel: nothing to dilate
    # 1e-6 below the bound [ours]: W s rounded to float32 must not step past an output channel's
    # max/min (which would move the weight step by one ulp)
    s = (s * (1.0 - 1e-6)).clamp(1.0, max_scale)
    s[saturated_channels(weight)] = 1.0
    return s.to(weight.dtype)


def _shape_in(s: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return s.reshape((1, -1) + (1,) * (weight.dim() - 2))


@torch.no_grad()
def dilate_weight_(layer: nn.Module, s: torch.Tensor) -> None:
    """W'[:, k] = s_k W[:, k] in place (Linear, Conv or their quantized wrappers)."""
    layer.weight.mul_(_shape_in(s, layer.weight))


@torch.no_grad()
def fold_into_norm_(norm: nn.Module, s: torch.Tensor) -> None:
    """X / s folded into a GroupNorm/LayerNorm affine: gamma / s, beta / s."""
    if getattr(norm, "weight", None) is None:
        raise ConfigError(f"cannot fold 1/s into {type(norm).__name__} without an affine; use scope='all'.")
    norm.weight.div_(s)
    if norm.bias is not None:
        norm.bias.div_(s)


@torch.no_grad()
def fold_into_rows_(producer: nn.Module, s: torch.Tensor) -> None:
    """X / s folded into the producing Linear: its output rows (and bias) divided by s."""
    producer.weight.div_(s.reshape((-1,) + (1,) * (producer.weight.dim() - 1)))
    if producer.bias is not None:
        producer.bias.div_(s)


class DilatedInput(nn.Module):
    """`inner(x / s)`: the explicit division in front of a layer's activation quantizer (scope 'all').

    Not a quantizer itself, so switching quantizers off (`quant_disabled`) keeps the division and the
    float model stays equivalent."""

    def __init__(self, inner: nn.Module, s: torch.Tensor, conv: bool) -> None:
        super().__init__()
        self.inner, self.conv = inner, conv
        self.register_buffer("inv_scale", 1.0 / s.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels are dim 1 for a conv input, the last dim for a Linear input
        return self.inner(x * self.inv_scale.reshape((1, -1, 1, 1) if self.conv else (-1,)))


# --------------------------------------------------------------------------------------- WD sites
@dataclass(frozen=True)
class WDSite:
    """Consumers sharing one input X, and where X / s goes: 'norm' / 'rows' (folded) or 'explicit'."""

    consumers: tuple[str, ...]
    producer: str | None
    fold: str


def _is_self_attention(m: nn.Module) -> bool:
    return type(m).__name__ == "Attention" and not getattr(m, "is_cross_attention", True)


def wd_sites(model: nn.Module, scope: str = "foldable") -> list[WDSite]:
    """Where WD applies in a diffusers U-Net (module docstring table), in module order."""
    if scope not in WD_SCOPES:
        raise ConfigError(f"WD scope must be one of {WD_SCOPES}, got {scope!r}.")
    sites: list[WDSite] = []
    taken: set[str] = set()
    for name, m in model.named_modules():
        if type(m).__name__ != "Attention":
            continue
        pre = f"{name}." if name else ""
        if _is_self_attention(m) and m.group_norm is not None and m.spatial_norm is None:
            qkv = tuple(f"{pre}{n}" for n in ("to_q", "to_k", "to_v"))
            sites.append(WDSite(qkv, f"{pre}group_norm", "norm"))
            taken.update(qkv)
        sites.append(WDSite((f"{pre}to_out.0",), f"{pre}to_v", "rows"))
        taken.add(f"{pre}to_out.0")
    if scope == "all":
        for name, m in model.named_modules():
            plain = isinstance(m, (nn.Linear, nn.Conv2d)) and getattr(m, "groups", 1) == 1
            quant = isinstance(m, _QuantWeightLayer) and getattr(m, "groups", 1) == 1
            if (plain or quant) and name not in taken and not any(name.startswith(t + ".") for t in taken):
                sites.append(WDSite((name,), None, "explicit"))
    return sites


@torch.no_grad()
def dilate_(model: nn.Module, scope: str = "foldable", max_scale: float = math.inf) -> list[dict]:
    """Apply weight dilation in place; returns one report row per site.

    'rows' sites run before the 'norm' sites of the same attention (the fold rescales to_v's rows,
    then q/k/v's columns are dilated on the rescaled weights). Explicit sites need the quantized
    wrappers (`quantize_` first), whose activation quantizer gets the division. Raises `ConfigError`
    when no site has an unsaturated channel (nothing to dilate)."""
    sites = wd_sites(model, scope)
    order = [s for s in sites if s.fold == "rows"] + [s for s in sites if s.fold != "rows"]
    named = dict(model.named_modules())
    rows, total = [], 0
    for site in order:
        layers = [named[c] for c in site.consumers]
        if len({m.weight.shape[1] for m in layers}) != 1:
            raise ConfigError(
                f"WD site {site.consumers} mixes input widths; these layers do not share an input.")
        stacked = torch.cat([_as_out_in_taps(m.weight).flatten(2) for m in layers], 0)
        s = dilation_scales(stacked, max_scale)
        n_unsat = int((~saturated_channels(stacked)).sum())
        total += n_unsat
        if site.fold == "explicit" and not isinstance(layers[0], _QuantWeightLayer):
            raise ConfigError(
                f"WD scope 'all' divides the input of {site.consumers[0]} explicitly inside its quantized "
                "layer: call methods.quant.quantize_ on the model first, or use scope='foldable'.")
        for m in layers:
            dilate_weight_(m, s)
        if site.fold == "norm":
            fold_into_norm_(named[site.producer], s)
        elif site.fold == "rows":
            fold_into_rows_(named[site.producer], s)
        else:
            layers[0].a_quant = DilatedInput(layers[0].a_quant, s, layers[0].weight.dim() == 4)
        rows.append({"site": ",".join(site.consumers), "fold": site.fold, "channels": int(s.numel()),
                     "unsaturated": n_unsat, "max_s": float(s.max()), "mean_log2_s": float(s.log2().mean())})
    if total == 0:
        raise ConfigError(
            f"weight dilation found no unsaturated input channel in the {len(order)} WD site(s) of this "
            f"model (scope={scope!r}): every input channel holds some output channel's min or max, so "
            "there is nothing to dilate. Run with dilation off, or scope='all' to cover more layers.")
    return rows
