"""A quantization-ready Segment Anything: fake-quantized attention wrappers, the prompt set a SAM
calibration runs on, the decoder forward PAR needs, and the q/k outlier measurement.

Used by PTQ4SAM (Lv et al., "PTQ4SAM: Post-Training Quantization for Segment Anything",
arXiv 2405.03144) and SAQ-SAM (arXiv 2503.06515); layout after their `QuantDecoderAttentionBlock`
and quantized ViT attention [code: `chengtao-lv/PTQ4SAM`, `jingjing0419/SAQ-SAM`]:

* decoder `Attention` (segment_anything `modeling/transformer.py`): q/k/v/out projections become
  `QuantLinear` (their input quantizers are the "inputs of q_proj and k_proj"), q k^T goes through a
  `QuantMatMul` whose two quantizers are the "outputs of q_proj and k_proj", softmax · v through a
  `QuantMatMul` whose first quantizer is the post-softmax one (log2 AGQ when
  `softmax_quant='log2'`) [code];
* encoder `Attention` (`modeling/image_encoder.py`, with decomposed relative positions): the same
  two products quantized, qkv/proj Linears wrapped [code];
* only `image_encoder` and `mask_decoder` are quantized; the prompt encoder stays FP, as in both
  official codes [code]. The upscaling `ConvTranspose2d` stays FP [ours: `quantize_` wraps Linear
  and Conv2d only].

With every quantizer off the wrappers equal segment_anything's modules exactly (tested).
`SamPromptSet` and `decode` are our own plumbing [ours]: the decoder's own submodules on a batch of
prompts from different images (the same computation as `MaskDecoder.predict_masks` without its
per-image `repeat_interleave`), returning the two-way transformer's token and image-token outputs
too, which PAR's loss supervises.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from methods.errors import ConfigError
from methods.quant.api import quantize_
from methods.quant.config import QuantConfig
from methods.quant.modules import QuantMatMul


def _decoder_attention_cls():
    from segment_anything.modeling.transformer import Attention

    return Attention


def _encoder_attention_cls():
    from segment_anything.modeling.image_encoder import Attention

    return Attention


class QuantSamAttention(nn.Module):
    """segment_anything's decoder `Attention` with quantized q k^T and softmax v products.

    `keep_probs=True` stores the last attention probabilities (B, heads, Nq, Nk) in `last_probs`
    (PCC's focus masks are computed from them).
    """

    def __init__(self, attn: nn.Module, a_bits: int, cfg: QuantConfig) -> None:
        super().__init__()
        self.q_proj, self.k_proj = attn.q_proj, attn.k_proj
        self.v_proj, self.out_proj = attn.v_proj, attn.out_proj
        self.num_heads, self.internal_dim = attn.num_heads, attn.internal_dim
        self.embedding_dim = attn.embedding_dim
        self.qk = QuantMatMul(a_bits, cfg)
        self.av = QuantMatMul(a_bits, cfg, softmax_input=True)
        self.keep_probs = False
        self.last_probs: torch.Tensor | None = None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def probs(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """softmax(Q K^T / sqrt(d)) for the raw inputs q, k (before the projections)."""
        qh, kh = self._heads(self.q_proj(q)), self._heads(self.k_proj(k))
        attn = self.qk(qh, kh.permute(0, 1, 3, 2)) / math.sqrt(qh.shape[-1])
        return attn.softmax(dim=-1)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.probs(q, k)
        if self.keep_probs:
            self.last_probs = p.detach()
        out = self.av(p, self._heads(self.v_proj(v)))
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class QuantSamEncoderAttention(nn.Module):
    """segment_anything's encoder `Attention` (relative positions) with quantized products."""

    def __init__(self, attn: nn.Module, a_bits: int, cfg: QuantConfig) -> None:
        super().__init__()
        self.qkv, self.proj = attn.qkv, attn.proj
        self.num_heads, self.scale, self.use_rel_pos = attn.num_heads, attn.scale, attn.use_rel_pos
        if self.use_rel_pos:
            self.rel_pos_h, self.rel_pos_w = attn.rel_pos_h, attn.rel_pos_w
        self.qk = QuantMatMul(a_bits, cfg)
        self.av = QuantMatMul(a_bits, cfg, softmax_input=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from segment_anything.modeling.image_encoder import add_decomposed_rel_pos

        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        attn = self.qk(q * self.scale, k.transpose(-2, -1))
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
        attn = attn.softmax(dim=-1)
        out = self.av(attn, v).view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


def _swap(parent: nn.Module, cls: type, make) -> int:
    n = 0
    for name, child in list(parent.named_children()):
        if isinstance(child, cls):
            setattr(parent, name, make(child))
            n += 1
        else:
            n += _swap(child, cls, make)
    return n


def is_sam(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("image_encoder", "prompt_encoder", "mask_decoder"))


def quantize_sam_(sam: nn.Module, config: QuantConfig) -> nn.Module:
    """Wrap the attention modules of `sam` and swap its encoder/decoder Linear/Conv2d layers in place."""
    if not is_sam(sam):
        raise ConfigError(
            f"quantize_sam_ expects a segment_anything Sam (image_encoder, prompt_encoder, mask_decoder), "
            f"got {type(sam).__name__}. Build it with sims.zoo (sam-shapes) or load a SAM checkpoint."
        )
    if config.quant_matmul:
        _swap(sam.mask_decoder, _decoder_attention_cls(),
              lambda a: QuantSamAttention(a, config.a_bits, config))
        _swap(sam.image_encoder, _encoder_attention_cls(),
              lambda a: QuantSamEncoderAttention(a, config.a_bits, config))
    return quantize_(sam, config, filter_fn=lambda _m, n: n.startswith(("image_encoder.", "mask_decoder.")))


def decoder_attentions(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every decoder attention (FP segment_anything `Attention` or the wrapper)."""
    fp_cls = _decoder_attention_cls()
    return [(n, m) for n, m in model.mask_decoder.named_modules()
            if isinstance(m, (fp_cls, QuantSamAttention))]


@dataclass(frozen=True)
class SamPromptSet:
    """Calibration (or evaluation) images and their prompts, ready for the model.

    images: (N, 3, S, S) encoder inputs (already `Sam.preprocess`ed); image_index: (P,) long, the
    image of each prompt; sparse: (P, T, C) prompt-encoder tokens (boxes or points, FP).
    """

    images: torch.Tensor
    image_index: torch.Tensor
    sparse: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.sparse.dim() != 3 or self.image_index.dim() != 1:
            raise ConfigError(
                f"SamPromptSet needs images (N, 3, S, S), image_index (P,), sparse (P, T, C); got "
                f"{tuple(self.images.shape)}, {tuple(self.image_index.shape)}, {tuple(self.sparse.shape)}."
            )
        if len(self.image_index) != len(self.sparse) or len(self.image_index) == 0:
            raise ConfigError(f"SamPromptSet needs one sparse embedding per prompt (>= 1), got "
                              f"{len(self.image_index)} prompts and {len(self.sparse)} embeddings.")
        if int(self.image_index.max()) >= len(self.images) or int(self.image_index.min()) < 0:
            raise ConfigError("SamPromptSet image_index refers to an image that is not in images.")

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    def prompts_of(self, idx: torch.Tensor,
                   max_per_image: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """For image positions idx (repeats allowed): (position of each prompt in idx, prompt ids)."""
        pos, ids = [], []
        for j, i in enumerate(idx.tolist()):
            mine = (self.image_index == i).nonzero().flatten()
            if max_per_image is not None:
                mine = mine[:max_per_image]
            pos.append(torch.full((len(mine),), j, dtype=torch.long))
            ids.append(mine)
        return torch.cat(pos), torch.cat(ids)


def decode(sam: nn.Module, emb: torch.Tensor, sparse: torch.Tensor) -> dict[str, torch.Tensor]:
    """The mask decoder on P prompts with one image embedding each: emb (P, C, h, w), sparse (P, T, C).

    Returns masks (P, 4, 4h, 4w), iou (P, 4), tokens (P, 1+4+T, C) and image_tokens (P, h*w, C): the
    two-way transformer's query and key ("image-token") outputs.
    """
    dec, pe = sam.mask_decoder, sam.prompt_encoder
    tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse], dim=1)
    src = emb + pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
    pos = pe.get_dense_pe().expand(src.size(0), -1, -1, -1)
    b, c, h, w = src.shape
    hs, keys = dec.transformer(src, pos, tokens)
    upscaled = dec.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
    hyper = torch.stack([mlp(hs[:, 1 + i, :]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1)
    bu, cu, hu, wu = upscaled.shape
    masks = (hyper @ upscaled.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu)
    return {"masks": masks, "iou": dec.iou_prediction_head(hs[:, 0, :]), "tokens": hs, "image_tokens": keys}


def run_sam(sam: nn.Module, data: SamPromptSet, idx: torch.Tensor,
            max_per_image: int | None = None) -> dict[str, torch.Tensor]:
    """Encoder on images idx, decoder on their prompts (see `decode`)."""
    emb = sam.image_encoder(data.images[idx])
    pos, ids = data.prompts_of(idx, max_per_image)
    return decode(sam, emb[pos], data.sparse[ids])


@torch.no_grad()
def qk_outlier_ratios(sam: nn.Module, data: SamPromptSet, quantile: float = 0.999) -> list[dict]:
    """Per decoder attention, for the four q/k-path tensors (inputs and outputs of q_proj and k_proj):
    max |x| and the `quantile` of |x| over `data`, and their ratio (the outlier question of SAQ-SAM).

    The paper reports a bulk in about [-1, 1] with extremes near +-170 in pretrained SAM [paper].
    """
    seen: dict[tuple[str, str], list[torch.Tensor]] = {}
    hooks = []
    for name, attn in decoder_attentions(sam):
        for proj in ("q_proj", "k_proj"):
            def hook(_m, args, out, key=(name, proj)):
                seen.setdefault((key[0], key[1] + ".in"), []).append(args[0].detach().flatten())
                seen.setdefault((key[0], key[1] + ".out"), []).append(out.detach().flatten())
            hooks.append(getattr(attn, proj).register_forward_hook(hook))
    try:
        for start in range(0, data.n_images, 16):
            run_sam(sam, data, torch.arange(start, min(start + 16, data.n_images)))
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for (name, tensor), parts in seen.items():
        a = torch.cat(parts).abs()
        k = min(max(int(math.ceil(quantile * a.numel())), 1), a.numel())
        q = float(a.kthvalue(k).values)
        top = float(a.max())
        rows.append({"attention": name, "tensor": tensor, "max_abs": top, "q999_abs": q,
                     "ratio": top / max(q, 1e-12), "n": int(a.numel())})
    return rows
