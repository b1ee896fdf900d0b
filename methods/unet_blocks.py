"""Block-level addressing of a diffusers U-Net (`UNet2DModel`, `UNet2DConditionModel`) for DeepCache:
which feature is cached at a cache point, and the shallow path that re-enters there.

DeepCache (Ma, Fang, Wang, arXiv 2312.00858; official code `horseee/DeepCache`):

* [code] What is cached. In both official paths the cached tensor is the hidden state *entering one
  up-path ResBlock, before its concatenation with the skip tensor*: DDPM
  (`experiments/ddpm/ddpm/models/deepcache_diffusion.py`: `features.append(h)` right before
  `self.up[i_level].block[i_block](torch.cat([h, hs_last]))`) and Stable Diffusion
  (`DeepCache/sd/unet_2d_blocks.py`, `CrossAttnUpBlock2D`: `prv_f.append(hidden_states)` before
  `torch.cat`). At a cached step the shallow down path runs `conv_in` and the down blocks up to the
  block whose skip tensor that ResBlock consumes (DDPM: `branch = 3*level + block`, block 2 = the
  downsampler; SD: `cache_layer_id`/`cache_block_id`, `exist_block_number`), then the up path
  re-enters at that ResBlock with the cached tensor and the fresh skip (`enter_block_number`).
* [code] Addresses. `up.J.res.K` caches the input of `up_blocks[J].resnets[K]` (the official
  granularity). `down.I.res.K` (alias `down.I.attn.K`: the skip is taken after the attention) and
  `down.I.down` (the downsampler, DDPM's block 2) name the same points from the down side, the way the
  official code does: the up ResBlock that consumes that block's skip tensor. `branch.B` is the
  whole-block point of `methods.deepcache` (the input of `up_blocks[n-1-B]`, i.e. `up.{n-1-B}.res.0`).
* [ours] `up.J.attn.K` caches the output of `up_blocks[J].resnets[K]` (the input of its attention), so
  a cached step also skips that ResBlock and reruns only the attention. The official code has no
  such point.
* [ours] The shallow down path stops as soon as it has produced the skip tensors the up path still
  consumes; the block-level code before this module also ran the last down block's downsampler,
  whose output was thrown away (same output, a few more MACs).
* [inferred] Partial blocks are run module by module with exactly the calls of the diffusers block
  `forward` (0.42): `{Down,AttnDown,CrossAttnDown}Block2D` and `{Up,AttnUp,CrossAttnUp}Block2D`.
  Other block classes are run whole (down) or addressable only at their input (`res.0`, up). FreeU
  (which rescales the tensors before the concatenation) is refused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from methods.errors import ConfigError, did_you_mean

DOWN_PARTIAL = ("DownBlock2D", "AttnDownBlock2D", "CrossAttnDownBlock2D")
UP_PARTIAL = ("UpBlock2D", "AttnUpBlock2D", "CrossAttnUpBlock2D")
ADDRESS = re.compile(
    r"^(?:up\.(\d+)\.(res|attn)\.(\d+)|down\.(\d+)\.(?:(res|attn)\.(\d+)|(down))|branch\.(\d+))$")


@dataclass(frozen=True)
class CachePoint:
    """One cache point. `name`: canonical address; `up_block`, `index`, `kind`: the cached tensor enters
    `up_blocks[up_block].resnets[index]` (kind 'res') or `.attentions[index]` (kind 'attn');
    `skips`: skip tensors the shallow path consumes; `mirror`: the down-side module whose skip tensor
    the entry ResBlock consumes ('' for attn points); `consumer`: module path of the first module fed."""

    name: str
    up_block: int
    index: int
    kind: str
    skips: int
    mirror: str
    consumer: str


def _attns(block: nn.Module) -> Any:
    return getattr(block, "attentions", None)


def _down_outputs(block: nn.Module) -> list[str]:
    """Names (inside the block) of the skip tensors a down block yields, in order."""
    a = _attns(block)
    outs = [f"attn.{k}" if a is not None else f"res.{k}" for k in range(len(block.resnets))]
    if getattr(block, "downsamplers", None) is not None:
        outs.append("down")
    return outs


def check_unet(unet: nn.Module) -> None:
    for b in (*unet.down_blocks, *unet.up_blocks):
        if hasattr(b, "skip_conv"):
            raise ConfigError("U-Nets with skip_conv blocks (NCSN++ style) are not supported here.")
    if any(getattr(b, "s1", None) for b in unet.up_blocks):
        raise ConfigError(
            "this U-Net has FreeU enabled (it rescales the cached tensor); call unet.disable_freeu().")
    n_skip = 1 + sum(len(_down_outputs(b)) for b in unet.down_blocks)
    n_up = sum(len(b.resnets) for b in unet.up_blocks)
    if n_skip != n_up:
        raise ConfigError(f"down path yields {n_skip} skip tensors but the up path consumes {n_up}; "
                          "only standard diffusers U-Nets are supported.")


def skip_names(unet: nn.Module) -> list[str]:
    """Down-side address of every skip tensor, in production order ('conv_in' first)."""
    names = ["conv_in"]
    for i, b in enumerate(unet.down_blocks):
        names += [f"down.{i}.{o}" for o in _down_outputs(b)]
    return names


def cache_points(unet: nn.Module) -> list[CachePoint]:
    """Every addressable cache point, deepest first (the last one is the shallowest)."""
    check_unet(unet)
    skips = skip_names(unet)
    total = len(skips)
    pts, flat = [], 0
    for j, b in enumerate(unet.up_blocks):
        partial = type(b).__name__ in UP_PARTIAL
        a = _attns(b)
        for k in range(len(b.resnets)):
            left = total - flat  # skips consumed from resnets[k] on
            if k == 0 or partial:
                pts.append(CachePoint(f"up.{j}.res.{k}", j, k, "res", left, skips[left - 1],
                                      f"up_blocks.{j}.resnets.{k}"))
            if partial and a is not None:
                pts.append(CachePoint(f"up.{j}.attn.{k}", j, k, "attn", left - 1, "",
                                      f"up_blocks.{j}.attentions.{k}"))
            flat += 1
    return pts


def resolve(unet: nn.Module, address: str) -> CachePoint:
    """A cache point from an address (`up.J.res.K`, `up.J.attn.K`, `down.I.res.K`, `down.I.attn.K`,
    `down.I.down`, `branch.B`); a bad one is a ConfigError listing the valid addresses."""
    pts = cache_points(unet)
    by_name = {p.name: p for p in pts}
    by_mirror = {p.mirror: p for p in pts if p.kind == "res"}
    text = str(address).strip()
    m = ADDRESS.match(text)
    found = None
    if m and m.group(1) is not None:
        found = by_name.get(text)
    elif m and m.group(8) is not None:
        b, n = int(m.group(8)), len(unet.up_blocks)
        found = by_name.get(f"up.{n - 1 - b}.res.0") if b < n else None
    elif m:
        i = m.group(4)
        if m.group(7):
            found = by_mirror.get(f"down.{i}.down")
        else:  # down.I.res.K and down.I.attn.K name the same skip tensor (taken after the attention)
            k = m.group(6)
            found = by_mirror.get(f"down.{i}.attn.{k}")
            if m.group(5) == "res":
                found = found or by_mirror.get(f"down.{i}.res.{k}")
    if found is None:
        downs = [p.mirror for p in pts if p.mirror.startswith("down.")]
        raise ConfigError(
            f"cache point {address!r} is not a block of this {type(unet).__name__}. Valid (deepest first): "
            f"{', '.join(p.name for p in pts)}; down-side aliases: {', '.join(downs)}; "
            f"or branch.0..branch.{len(unet.up_blocks) - 1}. {did_you_mean(text, list(by_name))}")
    return found


# --------------------------------------------------------------------------------------- running
def xattn_kwargs(ctx: dict[str, Any]) -> dict[str, Any]:
    return {k: ctx.get(k) for k in ("encoder_hidden_states", "attention_mask", "cross_attention_kwargs",
                                    "encoder_attention_mask")}


def _attn(block: nn.Module, k: int, h: torch.Tensor, ctx: dict[str, Any]) -> torch.Tensor:
    attn = block.attentions[k]
    if getattr(block, "has_cross_attention", False):
        return attn(h, **xattn_kwargs(ctx), return_dict=False)[0]
    return attn(h)


def down_partial(block: nn.Module, sample: torch.Tensor, emb: torch.Tensor, ctx: dict[str, Any],
                 wanted: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The first `wanted` (< all) skip tensors of a down block, as its `forward` computes them."""
    outs: tuple[torch.Tensor, ...] = ()
    a = _attns(block)
    for k, resnet in enumerate(block.resnets):
        sample = resnet(sample, emb)
        if a is not None:
            sample = _attn(block, k, sample, ctx)
        outs += (sample,)
        if len(outs) == wanted:
            break
    return sample, outs


def up_from(block: nn.Module, sample: torch.Tensor, res: tuple[torch.Tensor, ...], emb: torch.Tensor,
            ctx: dict[str, Any], size: Any, index: int, kind: str) -> torch.Tensor:
    """The rest of an up block entered at `resnets[index]` (kind 'res') or `attentions[index]` ('attn')."""
    first = index
    if kind == "attn":
        sample = _attn(block, index, sample, ctx)
        first = index + 1
    a = _attns(block)
    for k in range(first, len(block.resnets)):
        sample = torch.cat([sample, res[-1]], dim=1)
        res = res[:-1]
        sample = block.resnets[k](sample, emb)
        if a is not None:
            sample = _attn(block, k, sample, ctx)
    for up in block.upsamplers or ():
        kind_up = getattr(block, "upsample_type", None)
        if kind_up == "resnet":
            sample = up(sample, temb=emb)
        elif kind_up is not None:  # AttnUpBlock2D with a conv upsampler
            sample = up(sample)
        else:
            sample = up(sample, size)
    return sample


def capture_hook(unet: nn.Module, point: CachePoint, got: list[torch.Tensor]) -> Any:
    """Register a hook that appends the cached tensor of `point` to `got` during a plain forward."""
    block = unet.up_blocks[point.up_block]
    if point.kind == "res" and point.index == 0:
        def pre(_m, args, kwargs):
            got.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0])
        return block.register_forward_pre_hook(pre, with_kwargs=True)
    if point.kind == "attn":
        module = block.resnets[point.index]
    else:  # the tensor concatenated before resnets[K] is the output of the pair K-1
        a = _attns(block)
        module = a[point.index - 1] if a is not None else block.resnets[point.index - 1]

    def post(_m, _args, out):
        got.append(out[0] if isinstance(out, tuple) else getattr(out, "sample", out))
    return module.register_forward_hook(post)
