"""Fake-quantized layers: QuantLinear, QuantConv2d (input + weight quantizers), QuantMatMul (two input
quantizers), and quantized attention forwards for timm's `Attention` and torch's `MultiheadAttention`.

Layout follows the QDrop/BRECQ wrappers [code]: a layer quantizes its *input* activation and its
weight; weight and activation quantizers switch on/off independently (`enabled`). The wrapped layer
shares the original Parameters, so state-dict keys `weight`/`bias` are unchanged.

`QuantTimmAttention.forward` re-writes timm 1.0.x `Attention.forward`'s non-fused branch
(q * scale, q @ k^T, mask, softmax, attn_drop, @ v, norm, gate, proj) with the two products
through `QuantMatMul`; with quantizers disabled it equals timm's non-fused path exactly and the
fused SDPA path to float tolerance (tested). `QuantMHA` re-writes `nn.MultiheadAttention` for the
common case (packed or separate q/k/v weights, masks, batch_first); bias_k/bias_v/add_zero_attn are
not supported and such modules are left unwrapped [our scope choice].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from methods.errors import ConfigError
from methods.quant.primitives import PER_TENSOR, Granularity
from methods.quant.quantizers import AdaRound, Log2Quantizer, UniformQuantizer


def act_quantizer(bits: int, symmetric: bool, observer: str, p: float) -> UniformQuantizer:
    q = UniformQuantizer(bits, symmetric, PER_TENSOR, observer, p)
    q.role = "act"
    return q


def weight_quantizer(bits: int, symmetric: bool, gran: Granularity, observer: str) -> UniformQuantizer:
    q = UniformQuantizer(bits, symmetric, gran, observer)
    q.role = "weight"
    return q


class _QuantWeightLayer(nn.Module):
    """Shared parts of QuantLinear / QuantConv2d."""

    def _setup(self, layer: nn.Module, w_bits: int, a_bits: int, cfg) -> None:
        self.weight = layer.weight
        self.bias = layer.bias
        self.w_bits, self.a_bits = w_bits, a_bits
        self.w_quant = weight_quantizer(w_bits, cfg.w_symmetric, cfg.weight_granularity, cfg.w_observer)
        self.a_quant = act_quantizer(a_bits, cfg.a_symmetric, cfg.a_observer, cfg.a_p)
        self.adaround: AdaRound | None = None

    def calibrate_weight(self) -> None:
        from methods.quant.observers import range_for
        from methods.quant.primitives import to_blocks

        q = self.w_quant
        blocks = to_blocks(self.weight.detach(), q.granularity)
        q.set_range(*range_for(q.observer_kind, blocks, q.bits, q.symmetric, q.p))

    def init_adaround(self) -> AdaRound:
        self.adaround = AdaRound(self.weight, self.w_quant)
        return self.adaround

    def qweight(self) -> torch.Tensor:
        if not self.w_quant.enabled or not self.w_quant.calibrated:
            return self.weight
        if self.adaround is not None:
            return self.adaround(self.weight, self.w_quant)
        return self.w_quant(self.weight)

    def fp_forward(self, x: torch.Tensor) -> torch.Tensor:
        """This layer in full precision on the given (unquantized) input."""
        return self._op(x, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(self.a_quant(x), self.qweight())


class QuantLinear(_QuantWeightLayer):
    def __init__(self, linear: nn.Linear, w_bits: int, a_bits: int, cfg) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._setup(linear, w_bits, a_bits, cfg)

    def _op(self, x, w):
        return F.linear(x, w, self.bias)


class QuantConv2d(_QuantWeightLayer):
    def __init__(self, conv: nn.Conv2d, w_bits: int, a_bits: int, cfg) -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ConfigError(
                f"QuantConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}; "
                "exclude this layer with filter_fn."
            )
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self._setup(conv, w_bits, a_bits, cfg)

    def _op(self, x, w):
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class QuantMatMul(nn.Module):
    """a @ b with a quantizer on each operand; `qa` may be a Log2Quantizer (post-softmax)."""

    def __init__(self, a_bits: int, cfg, softmax_input: bool = False) -> None:
        super().__init__()
        self.a_bits = a_bits
        if softmax_input and cfg.softmax_quant != "uniform":
            taus = (2,) if cfg.softmax_quant == "log_sqrt2" else (1, 2, 4)
            self.qa = Log2Quantizer(a_bits, taus)
            self.qa.role = "act"
        else:
            self.qa = act_quantizer(a_bits, cfg.a_symmetric, cfg.a_observer, cfg.a_p)
        self.qb = act_quantizer(a_bits, cfg.a_symmetric, cfg.a_observer, cfg.a_p)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if isinstance(self.qa, Log2Quantizer):
            self.qa.observe(a, b)
        return self.qa(a) @ self.qb(b)


class QuantTimmAttention(nn.Module):
    """timm 1.0.x `Attention` with quantized q k^T and softmax v products."""

    def __init__(self, attn: nn.Module, a_bits: int, cfg) -> None:
        super().__init__()
        for name in ("qkv", "q_norm", "k_norm", "attn_drop", "norm", "proj", "proj_drop"):
            setattr(self, name, getattr(attn, name))
        self.gate = getattr(attn, "gate", None)
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        self.attn_dim = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.scale = attn.scale
        self.qk = QuantMatMul(a_bits, cfg)
        self.av = QuantMatMul(a_bits, cfg, softmax_input=True)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        from timm.layers import maybe_add_mask, resolve_self_attn_mask

        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        q = q * self.scale
        attn = self.qk(q, k.transpose(-2, -1))
        attn = maybe_add_mask(attn, resolve_self_attn_mask(N, attn, attn_mask, is_causal))
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = self.av(attn, v)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


def mha_supported(mha: nn.MultiheadAttention) -> bool:
    return mha.bias_k is None and mha.bias_v is None and not mha.add_zero_attn


class QuantMHA(nn.Module):
    """`nn.MultiheadAttention` re-written with separate q/k/v Linears and quantized products."""

    def __init__(self, mha: nn.MultiheadAttention, a_bits: int, cfg) -> None:
        super().__init__()
        if not mha_supported(mha):
            raise ConfigError("QuantMHA does not support bias_k/bias_v/add_zero_attn; exclude this module.")
        e, self.num_heads, self.batch_first = mha.embed_dim, mha.num_heads, mha.batch_first
        self.head_dim, self.dropout = e // mha.num_heads, mha.dropout
        kdim, vdim = mha.kdim, mha.vdim
        bias = mha.in_proj_bias
        ws = (
            mha.in_proj_weight.detach().chunk(3)
            if mha._qkv_same_embed_dim
            else (mha.q_proj_weight.detach(), mha.k_proj_weight.detach(), mha.v_proj_weight.detach())
        )
        bs = bias.detach().chunk(3) if bias is not None else (None, None, None)
        self.q_proj, self.k_proj, self.v_proj = (
            self._linear(w, b, d) for w, b, d in zip(ws, bs, (e, kdim, vdim), strict=True)
        )
        self.out_proj = mha.out_proj
        self.qk = QuantMatMul(a_bits, cfg)
        self.av = QuantMatMul(a_bits, cfg, softmax_input=True)

    @staticmethod
    def _linear(w, b, in_dim):
        lin = nn.Linear(in_dim, w.shape[0], bias=b is not None)
        lin.weight = nn.Parameter(w.clone())
        if b is not None:
            lin.bias = nn.Parameter(b.clone())
        return lin

    def _heads(self, x, L, B):
        return x.reshape(L, B, self.num_heads, self.head_dim).permute(1, 2, 0, 3)  # (B, H, L, d)

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        if self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        L, B, E = query.shape
        S = key.shape[0]
        q = self._heads(self.q_proj(query), L, B) * (self.head_dim**-0.5)
        k = self._heads(self.k_proj(key), S, B)
        v = self._heads(self.v_proj(value), S, B)
        scores = self.qk(q, k.transpose(-2, -1))
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(L, S, dtype=torch.bool, device=q.device).triu(1)
        for mask, shape in ((attn_mask, None), (key_padding_mask, (B, 1, 1, S))):
            if mask is None:
                continue
            if mask.dim() == 3:  # (B * H, L, S)
                mask = mask.reshape(B, self.num_heads, L, S)
            elif shape is not None:
                mask = mask.reshape(shape)
            scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        attn = scores.softmax(-1)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, self.dropout)
        out = self.av(attn, v).permute(2, 0, 1, 3).reshape(L, B, E)
        out = self.out_proj(out)
        if self.batch_first:
            out = out.transpose(0, 1)
        weights = None
        if need_weights:
            weights = attn.mean(1) if average_attn_weights else attn
        return out, weights
