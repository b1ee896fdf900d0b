"""Quantized attention products for diffusers U-Nets: a processor for
`diffusers.models.attention_processor.Attention` whose q k^T and softmax v go through `QuantMatMul`.

Sources and labels:

* [code] CacheQuant's official code (BienLuky/CacheQuant, built on Q-Diffusion's `quant_block.py`)
  quantizes both attention matmuls with activation quantizers: q and k before q k^T, the softmax
  output and v before the second product (Q-Diffusion keeps the softmax at `sm_abit`, 8 by default;
  `softmax_bits` here). That is what this file reproduces for diffusers models.
* [ours] Where the scale goes: we quantize q * scale (as in timm and `QuantTimmAttention`), Q-Diffusion
  quantizes the unscaled q and scales the product. With per-tensor uniform quantizers the two give the
  same grid up to float rounding (min-max, percentile and Lp ranges all scale with the input).
* [ours] The attention is re-written as a diffusers processor that mirrors `AttnProcessor2_0` /
  `AttnProcessor` of diffusers 0.42 (spatial_norm, group_norm, 4-D inputs, norm_cross, norm_q/norm_k,
  mask, upcasts, to_out, residual_connection, rescale_output_factor) on the 4-D (B, H, L, d) head
  layout. With quantizers uncalibrated or disabled it equals the default processor to float
  tolerance (tested). The processor is an `nn.Module`, so diffusers registers it as the submodule
  `processor` of the Attention: its quantizers are reached by `model.modules()`, `calibrate`,
  `quant_disabled` and deepcopy, and a caller can swap them (`make`, e.g. per-step quantizers).
* [ours] Features the default processors do not cover (added k/v projections, GQA k/v heads,
  pre-only blocks) raise `ConfigError` rather than being approximated; `AttnProcessor2_0` ignores
  `attn.scale` and `AttnProcessor` ignores `norm_q`/`norm_k`, so those two ambiguous combinations are
  refused too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from methods.errors import ConfigError
from methods.quant.modules import QuantMatMul, act_quantizer


def _attention_cls():
    from diffusers.models.attention_processor import Attention

    return Attention


def check_supported(attn: nn.Module) -> None:
    """Raise `ConfigError` when `attn` uses a feature `QuantAttnProcessor` does not reproduce."""
    name = type(attn).__name__
    if getattr(attn, "add_k_proj", None) is not None or getattr(attn, "add_q_proj", None) is not None:
        raise ConfigError(
            f"QuantAttnProcessor supports self/cross attention with to_q/to_k/to_v only; this {name} has "
            f"added k/v projections (added_kv_proj_dim={attn.added_kv_proj_dim}). Leave such attentions "
            "in full precision (exclude them with filter_fn)."
        )
    if attn.to_k is None or attn.to_v is None or attn.to_out is None or len(attn.to_out) != 2:
        raise ConfigError(
            f"QuantAttnProcessor expects to_k, to_v and to_out=[Linear, Dropout]; this {name} has "
            f"to_k={type(attn.to_k).__name__}, to_out={attn.to_out!r} (only_cross_attention / pre_only "
            "blocks). Leave it in full precision."
        )
    if attn.inner_kv_dim != attn.inner_dim:
        raise ConfigError(
            f"QuantAttnProcessor expects as many k/v heads as query heads; this {name} has inner_dim="
            f"{attn.inner_dim}, inner_kv_dim={attn.inner_kv_dim} (kv_heads). Leave it in full precision."
        )


class QuantAttnProcessor(nn.Module):
    """diffusers attention processor with quantized products: scores = qk(q * scale, k^T) (+ mask),
    probs = softmax(scores), out = av(probs, v); `qk` / `av` are `QuantMatMul`s (`qa`, `qb`)."""

    def __init__(self, a_bits: int, cfg, softmax_bits: int | None = None) -> None:
        super().__init__()
        self.qk = QuantMatMul(a_bits, cfg)
        self.av = QuantMatMul(a_bits, cfg, softmax_input=True)
        if softmax_bits is not None and cfg.softmax_quant == "uniform":
            self.av.qa = act_quantizer(softmax_bits, False, cfg.a_observer, cfg.a_p)

    # diffusers filters the keyword arguments it passes by inspecting `processor.__call__`, so the
    # signature is spelled out here (nn.Module.__call__ alone would make it drop `temb`).
    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        check_supported(attn)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
                             for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        dtype = query.dtype
        if attn.upcast_attention:
            query, key = query.float(), key.float()
        scores = self.qk(query * attn.scale, key.transpose(-1, -2))
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:  # SDPA's convention: True = attend
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            else:
                scores = scores + attention_mask
        if attn.upcast_softmax:
            scores = scores.float()
        probs = scores.softmax(dim=-1).to(dtype)
        hidden_states = self.av(probs, value)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.to(dtype)))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _check_processor(attn: nn.Module, name: str) -> None:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    proc = attn.processor
    if isinstance(proc, QuantAttnProcessor):
        raise ConfigError(
            f"{name} already has a QuantAttnProcessor; call install_quant_attention on a fresh copy of the "
            "FP model."
        )
    if not isinstance(proc, (AttnProcessor, AttnProcessor2_0)):
        raise ConfigError(
            f"install_quant_attention replaces diffusers' default AttnProcessor / AttnProcessor2_0; {name} "
            f"uses {type(proc).__name__}. Reset it with model.set_default_attn_processor() first, or exclude "
            "this attention."
        )
    head_dim = attn.inner_dim // attn.heads
    if isinstance(proc, AttnProcessor2_0) and abs(attn.scale - head_dim**-0.5) > 1e-12 * attn.scale:
        raise ConfigError(
            f"{name}: AttnProcessor2_0 uses scale head_dim**-0.5 = {head_dim**-0.5:.6g} but attn.scale = "
            f"{attn.scale:.6g}, so the FP model and the quantized one would disagree. Switch it to "
            "AttnProcessor (which uses attn.scale) before installing."
        )
    if isinstance(proc, AttnProcessor) and (attn.norm_q is not None or attn.norm_k is not None):
        raise ConfigError(
            f"{name}: diffusers' AttnProcessor ignores norm_q/norm_k (qk_norm) while AttnProcessor2_0 and "
            "QuantAttnProcessor apply them, so the FP model and the quantized one would disagree. Switch it "
            "to AttnProcessor2_0 before installing."
        )


def install_quant_attention(
    model: nn.Module,
    a_bits: int,
    cfg,
    make: Callable[[], nn.Module] | None = None,
    softmax_bits: int | None = None,
) -> int:
    """Give every diffusers `Attention` of `model` a `QuantAttnProcessor`; returns how many.

    `cfg` is a `QuantConfig` (a_symmetric, a_observer, a_p, softmax_quant are read). `make`, a
    zero-argument factory, replaces the four operand quantizers (qk.qa, qk.qb, av.qa, av.qb) of each
    attention, one new module per operand. `softmax_bits` sets the bits of the post-softmax operand
    (uniform softmax quantizer only; Q-Diffusion/CacheQuant use 8). All attentions are checked before
    any is changed.
    """
    attn_cls = _attention_cls()
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, attn_cls)]
    for name, attn in found:
        check_supported(attn)
        _check_processor(attn, name or type(model).__name__)
    for _, attn in found:
        proc = QuantAttnProcessor(a_bits, cfg, softmax_bits)
        if make is not None:
            for mm in (proc.qk, proc.av):
                for slot in ("qa", "qb"):
                    q = make()
                    if not isinstance(q, nn.Module):
                        raise ConfigError(
                            f"make() must return an nn.Module quantizer, got {type(q).__name__}; pass a "
                            "factory such as lambda: StepActQuant(bits, steps, clock)."
                        )
                    setattr(mm, slot, q)
        attn.set_processor(proc)
        proc.to(attn.to_q.weight.device)
    return len(found)


__all__ = ["QuantAttnProcessor", "check_supported", "install_quant_attention"]
