"""DeepCache for diffusers U-Nets (`UNet2DModel`, `UNet2DConditionModel`): reuse a deep feature
across denoising steps and recompute only the shallow branch.

Paper: Ma, Fang, Wang, "DeepCache: Accelerating Diffusion Models for Free", arXiv 2312.00858;
official code `horseee/DeepCache`; reused by CacheQuant (arXiv 2503.01323,
`mainddpm/ddpm/models/deepcache_diffusion.py`).

* [paper] At a refresh step the whole U-Net runs and the high-level feature entering a chosen
  up-block is cached; at the following steps only the shallow down-block(s) and the matching
  up-blocks run, with the cached deep feature in place of everything deeper.
* [code] Schedules: uniform 1:N (refresh every N-th step) and DeepCache's non-uniform
  `sample_from_quad_center` (refresh steps concentrated around a centre step by a power law,
  lowering the exponent by 0.02 until exactly ceil(T/N) distinct steps remain). The released function
  raises negative numbers to fractional powers (NaN in NumPy); we re-derive the intended symmetric
  mapping x -> centre + sign(v)|v|^p [inferred, reference/quant.md § 3.2].
* Granularity: `branch = b` caches the input of `up_blocks[n-1-b]` (a whole diffusers block,
  [inferred]); `cache_point` names any up-path ResBlock input as the official DDPM/SD code does
  ([code]; `methods/unet_blocks.py` says which tensor is cached and where the shallow path re-enters),
  or an up-path attention input ([ours]). Cached steps run `conv_in`, the down blocks until the skip
  tensors still needed exist (since the ResBlock-level change, no longer the last down block's unused
  downsampler [ours]), the up path from the cache point and the output head.
  The refresh step is the library's own `unet(...)` with a hook that captures the
  feature, so it equals the plain forward exactly. U-Nets with `skip_conv` up-blocks (NCSN++ style),
  FreeU, ControlNet/adapter residuals and `image_hint` conditioning are refused with a `ConfigError`.
* [ours] `cache_point_macs` reports, for every cache point, the MACs of a cached step as a fraction
  of a full step (counted by `methods.metrics.macs`, FlopCounterMode).
* [inferred] `sample_loop` is one deterministic sampler loop (any diffusers scheduler with
  `set_timesteps`/`step`) with hooks used by CacheQuant: `on_step` before each U-Net call (the
  timestep-quantizer clock), `transform_cache` (cache error correction) and `record`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from methods.errors import ConfigError, did_you_mean
from methods.metrics.macs import count_macs
from methods.unet_blocks import (
    ADDRESS,
    DOWN_PARTIAL,
    cache_points,
    capture_hook,
    check_unet,
    down_partial,
    resolve,
    up_from,
)

SCHEDULES = ("uniform", "nonuniform")
UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")


# --------------------------------------------------------------------------------------- schedules
def uniform_schedule(steps: int, interval: int) -> list[int]:
    """Refresh steps 0, N, 2N, ... (DeepCache's uniform 1:N schedule)."""
    _check_steps(steps, interval)
    return list(range(0, steps, interval))


def nonuniform_schedule(steps: int, interval: int, center: int | None = None,
                        power: float = 1.4) -> list[int]:
    """ceil(T/N) refresh steps, dense around `center` (default T*0.3, DeepCache's 15 of 50).

    Evenly spaced v in [-c^(1/p), (T-c)^(1/p)] map to c + sign(v)|v|^p (truncated to int, as the
    reference's `np.int32`); the two end points are dropped, step 0 is prepended. The exponent is
    lowered by 0.02 until exactly ceil(T/N) distinct steps remain; at p = 1 the mapping is uniform,
    which always succeeds.
    """
    _check_steps(steps, interval)
    k = math.ceil(steps / interval)
    c = int(round(0.3 * steps)) if center is None else int(center)
    if not 0 <= c < steps:
        raise ConfigError(f"centre step must be in [0, {steps}), got {c}.")
    if power < 1.0:
        raise ConfigError(f"power must be >= 1 (1 = uniform), got {power}.")
    if k <= 1:
        return [0]
    p = power
    while True:
        idx = _quad_center(steps, k, c, p)
        if len(idx) == k:
            return idx
        if p <= 1.0:
            return [int(round(i * steps / k)) for i in range(k)]  # only reachable for degenerate rounding
        p = max(1.0, round(p - 0.02, 10))


def _quad_center(steps: int, k: int, c: int, p: float) -> list[int]:
    v = torch.linspace(-(c ** (1.0 / p)), (steps - c) ** (1.0 / p), k + 1, dtype=torch.float64)
    x = torch.sign(v) * v.abs().pow(p)
    pts = sorted({int(c + int(xi)) for xi in x.tolist()})  # int() truncates toward zero like np.int32
    inner = [i for i in pts[1:-1] if 0 < i < steps]
    return sorted({0, *inner})


def cache_schedule(kind: str, steps: int, interval: int, center: int | None = None,
                   power: float = 1.4) -> list[int]:
    if kind == "uniform":
        return uniform_schedule(steps, interval)
    if kind == "nonuniform":
        return nonuniform_schedule(steps, interval, center, power)
    hint = did_you_mean(str(kind), SCHEDULES)
    raise ConfigError(f"schedule must be one of {SCHEDULES}, got {kind!r}. {hint}")


def check_refresh_steps(refresh: list[int] | tuple[int, ...], steps: int) -> tuple[int, ...]:
    """Sorted, unique, inside [0, steps), and containing step 0 (there is no cache before it)."""
    out = tuple(sorted({int(r) for r in refresh}))
    if not out or out[0] != 0 or out[-1] >= steps:
        raise ConfigError(
            f"refresh steps must include step 0 and lie in [0, {steps}), got {list(refresh)}; "
            "build them with cache_schedule or cachequant.dps_schedule."
        )
    return out


def _check_steps(steps: int, interval: int) -> None:
    if steps < 1 or interval < 1:
        raise ConfigError(f"need steps >= 1 and cache interval >= 1, got steps={steps}, interval={interval}.")


# --------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DeepCacheConfig:
    """Interval N (1 = no caching), schedule, cached branch (0 = shallowest), non-uniform centre/power."""

    interval: int = 5
    schedule: str = "uniform"
    branch: int = 0
    center: int | None = None
    power: float = 1.4
    cache_point: str | None = None  # a methods.unet_blocks address ("up.2.res.1"); replaces branch
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.interval, int) or self.interval < 1:
            raise ConfigError(f"interval must be an int >= 1, got {self.interval!r}.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}.")
        if not isinstance(self.branch, int) or self.branch < 0:
            raise ConfigError(f"branch must be an int >= 0, got {self.branch!r}.")
        if self.power < 1.0:
            raise ConfigError(f"power must be >= 1, got {self.power}.")
        if self.cache_point is not None:
            if not isinstance(self.cache_point, str) or not ADDRESS.match(self.cache_point.strip()):
                raise ConfigError(
                    f"cache_point must be a block address like 'up.2.res.1', 'up.1.attn.0', 'down.1.res.0', "
                    f"'down.0.down' or 'branch.1', got {self.cache_point!r}.")
            if self.branch != 0:
                raise ConfigError(
                    f"give either branch ({self.branch}) or cache_point ({self.cache_point!r}), not both.")
        if self.version != 1:
            raise ConfigError(f"DeepCacheConfig version {self.version} is unknown; this code reads 1.")

    def refresh_steps(self, steps: int) -> list[int]:
        return cache_schedule(self.schedule, steps, self.interval, self.center, self.power)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {"interval": ("int", 1, 10), "schedule": ("categorical", list(SCHEDULES)),
                "branch": ("categorical", [0, 1, 2])}


# --------------------------------------------------------------------------------------- the U-Net
class DeepCacheUNet:
    """A diffusers U-Net split at a cache point: `full` (plain forward + captured feature) and `shallow`.

    `branch = b` is the whole-block point (the input of `up_blocks[n-1-b]`); `cache_point` is any
    block address of `methods.unet_blocks` (`"up.2.res.1"`, `"down.1.res.0"`, `"up.1.attn.0"`, ...) and
    takes the place of `branch` (give one of the two).
    """

    def __init__(self, unet: nn.Module, branch: int = 0, cache_point: str | None = None) -> None:
        cls = type(unet).__name__
        if cls not in UNET_CLASSES:
            raise ConfigError(f"DeepCache supports diffusers {UNET_CLASSES}, got {cls}.")
        n = len(unet.up_blocks)
        check_unet(unet)
        if cache_point is not None:
            if branch != 0:
                raise ConfigError(
                    f"give either branch ({branch}) or cache_point ({cache_point!r}), not both.")
            self.point = resolve(unet, cache_point)
            self.branch = None
        else:
            if not isinstance(branch, int) or not 0 <= branch < n:
                raise ConfigError(f"branch must be in [0, {n}) for this U-Net ({n} up-blocks), got {branch}.")
            self.point = resolve(unet, f"branch.{branch}")
            self.branch = branch
        self.unet, self.conditional = unet, cls == "UNet2DConditionModel"
        self.up_index = self.point.up_block
        self.need = self.point.skips

    @property
    def cache_point(self) -> str:
        return self.point.name

    @property
    def cache_block(self) -> nn.Module:
        return self.unet.up_blocks[self.up_index]

    def full(self, x: torch.Tensor, t: Any, **cond: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The library forward; returns (output, the feature cached at the cache point)."""
        got: list[torch.Tensor] = []
        h = capture_hook(self.unet, self.point, got)
        try:
            out = self.unet(x, t, **cond).sample
        finally:
            h.remove()
        return out, got[0]

    def shallow(self, x: torch.Tensor, t: Any, feature: torch.Tensor, **cond: Any) -> torch.Tensor:
        """Shallow path only: conv_in and the down blocks until the skip tensors the up path still
        consumes exist, then the up path from the cache point on, fed `feature`."""
        u, p = self.unet, self.point
        sample, emb, ctx, timesteps = (_cond_prefix if self.conditional else _plain_prefix)(u, x, t, cond)
        res: tuple[torch.Tensor, ...] = ()
        if self.need:
            sample = u.conv_in(sample)
            res = (sample,)
        for block in u.down_blocks:
            if len(res) >= self.need:
                break
            wanted = self.need - len(res)
            if wanted < len(block.resnets) + (block.downsamplers is not None) \
                    and type(block).__name__ in DOWN_PARTIAL:
                sample, r = down_partial(block, sample, emb, ctx, wanted)
            else:
                sample, r = _down(block, sample, emb, ctx)
            res += r
        res = res[: self.need]
        sample = feature
        n = len(u.up_blocks)
        entry_partial = (p.kind, p.index) != ("res", 0)
        for i in range(self.up_index, n):
            block = u.up_blocks[i]
            take = len(block.resnets)
            if i == self.up_index:
                take -= p.index + (p.kind == "attn")
            r, res = res[len(res) - take:], res[: len(res) - take]
            size = res[-1].shape[2:] if (i < n - 1 and ctx.get("forward_upsample_size")) else None
            if i == self.up_index and entry_partial:
                sample = up_from(block, sample, r, emb, ctx, size, p.index, p.kind)
            else:
                sample = _up(block, sample, r, emb, ctx, size)
        return _head(u, sample, timesteps, self.conditional)


def _plain_prefix(u, x, t, cond):
    if cond:
        extra = set(cond) - {"class_labels"}
        if extra:
            raise ConfigError(f"UNet2DModel takes only class_labels as conditioning, got {sorted(extra)}.")
    if u.config.center_input_sample:
        x = 2 * x - 1.0
    ts = t if torch.is_tensor(t) else torch.tensor([t], dtype=torch.long, device=x.device)
    if ts.dim() == 0:
        ts = ts[None].to(x.device)
    ts = ts * torch.ones(x.shape[0], dtype=ts.dtype, device=ts.device)
    emb = u.time_embedding(u.time_proj(ts).to(dtype=u.dtype))
    labels = cond.get("class_labels")
    if u.class_embedding is not None:
        if labels is None:
            raise ConfigError("this UNet2DModel is class-conditional: pass class_labels.")
        if u.config.class_embed_type == "timestep":
            labels = u.time_proj(labels)
        emb = emb + u.class_embedding(labels).to(dtype=u.dtype)
    return x, emb, {}, ts


_REFUSED_COND = ("down_block_additional_residuals", "mid_block_additional_residual",
                 "down_intrablock_additional_residuals")


def _cond_prefix(u, x, t, cond):
    bad = [k for k in _REFUSED_COND if cond.get(k) is not None]
    if bad or u.config.addition_embed_type == "image_hint":
        raise ConfigError(
            f"DeepCache here does not support ControlNet/adapter residuals or image_hint ({bad}); drop them.")
    factor = 2 ** u.num_upsamplers
    ctx: dict[str, Any] = {"forward_upsample_size": any(d % factor != 0 for d in x.shape[-2:])}
    for key in ("attention_mask", "encoder_attention_mask"):
        m = cond.get(key)
        ctx[key] = None if m is None else ((1 - m.to(x.dtype)) * -10000.0).unsqueeze(1)
    if u.config.center_input_sample:
        x = 2 * x - 1.0
    emb = u.time_embedding(u.get_time_embed(sample=x, timestep=t), cond.get("timestep_cond"))
    class_emb = u.get_class_embed(sample=x, class_labels=cond.get("class_labels"))
    if class_emb is not None:
        emb = torch.cat([emb, class_emb], dim=-1) if u.config.class_embeddings_concat else emb + class_emb
    ehs = cond["encoder_hidden_states"]
    aug = u.get_aug_embed(emb=emb, encoder_hidden_states=ehs, added_cond_kwargs=cond.get("added_cond_kwargs"))
    emb = emb + aug if aug is not None else emb
    if u.time_embed_act is not None:
        emb = u.time_embed_act(emb)
    ctx["encoder_hidden_states"] = u.process_encoder_hidden_states(
        encoder_hidden_states=ehs, added_cond_kwargs=cond.get("added_cond_kwargs"))
    ctx["cross_attention_kwargs"] = cond.get("cross_attention_kwargs")
    return x, emb, ctx, None


def _xattn_kwargs(ctx: dict[str, Any]) -> dict[str, Any]:
    return {k: ctx.get(k) for k in ("encoder_hidden_states", "attention_mask", "cross_attention_kwargs",
                                    "encoder_attention_mask")}


def _down(block, sample, emb, ctx):
    if getattr(block, "has_cross_attention", False):
        return block(hidden_states=sample, temb=emb, **_xattn_kwargs(ctx))
    return block(hidden_states=sample, temb=emb)


def _up(block, sample, res, emb, ctx, size):
    if not ctx:  # UNet2DModel calls up-blocks positionally without upsample_size
        return block(sample, res, emb)
    kwargs = {"hidden_states": sample, "temb": emb, "res_hidden_states_tuple": res, "upsample_size": size}
    if getattr(block, "has_cross_attention", False):
        kwargs.update(_xattn_kwargs(ctx))
    return block(**kwargs)


def _head(u, sample, timesteps, conditional):
    if not conditional or u.conv_norm_out is not None:
        sample = u.conv_act(u.conv_norm_out(sample))
    sample = u.conv_out(sample)
    if not conditional and u.config.time_embedding_type == "fourier":
        sample = sample / timesteps.reshape((sample.shape[0], *([1] * len(sample.shape[1:]))))
    return sample


# --------------------------------------------------------------------------------------- sampling
StepHook = Callable[[int, Any], None]


@torch.no_grad()
def sample_loop(
    dc: DeepCacheUNet, scheduler: Any, noise: torch.Tensor, steps: int, refresh: list[int] | tuple[int, ...],
    *, cond: dict[str, Any] | None = None, on_step: StepHook | None = None,
    transform_cache: Callable[[int, Any, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    record: Callable[[int, Any, torch.Tensor, torch.Tensor | None, bool], None] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run the sampler with DeepCache; returns x_0 in model space.

    Hooks: `on_step(i, t)` before each U-Net call; `transform_cache(i, t, x_t, cache)` corrects a
    reused cache at cached steps; `record(i, t, x_t, feature, refreshed)` after each U-Net call, where
    `feature` is the freshly captured feature at refresh steps and the (corrected) reused one otherwise.
    """
    cond = cond or {}
    refresh_set = set(check_refresh_steps(refresh, steps))
    scheduler.set_timesteps(steps)
    x, cache = noise, None
    for i, t in enumerate(scheduler.timesteps):
        if on_step is not None:
            on_step(i, t)
        if i in refresh_set:
            out, cache = dc.full(x, t, **cond)
            used = cache
        else:
            used = transform_cache(i, t, x, cache) if transform_cache is not None else cache
            out = dc.shallow(x, t, used, **cond)
        if record is not None:
            record(i, t, x, used, i in refresh_set)
        x = scheduler.step(out, t, x, generator=generator).prev_sample
    return x


class _Path(nn.Module):
    """nn.Module view of one U-Net path so FlopCounterMode can count it."""

    def __init__(self, dc: DeepCacheUNet, shallow: bool, feature: torch.Tensor | None, cond: dict) -> None:
        super().__init__()
        self.unet, self.dc, self.is_shallow, self.feature, self.cond = dc.unet, dc, shallow, feature, cond

    def forward(self, x, t):
        if self.is_shallow:
            return self.dc.shallow(x, t, self.feature, **self.cond)
        return self.dc.full(x, t, **self.cond)[0]


def step_macs(dc: DeepCacheUNet, example: torch.Tensor, t: Any = 10,
              cond: dict | None = None) -> dict[str, int]:
    """Per-sample MACs of a full step and of a cached (shallow) step (FlopCounterMode convention)."""
    cond = cond or {}
    x = example[:1]
    c1 = {k: (v[:1] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in cond.items()}
    with torch.no_grad():  # a feature with a grad_fn trips FlopCounterMode's module tracker
        _, feat = dc.full(x, t, **c1)
    full = count_macs(_Path(dc, False, None, c1), (x, t)).total
    shallow = count_macs(_Path(dc, True, feat, c1), (x, t)).total
    return {"full": full, "shallow": shallow}


def cache_point_macs(unet: nn.Module, example: torch.Tensor, t: Any = 10, cond: dict | None = None,
                     points: list[str] | None = None) -> list[dict[str, Any]]:
    """For every cache point (deepest first, or the given addresses): per-sample MACs of a full and
    of a cached step, the cached step's fraction of a full one and the MAC speed-up ceiling
    (1 / fraction, an interval N -> infinity bound), counted with `methods.metrics.macs.count_macs`."""
    cond = cond or {}
    x = example[:1]
    c1 = {k: (v[:1] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in cond.items()}
    rows, full = [], None
    for p in (cache_points(unet) if points is None else [resolve(unet, a) for a in points]):
        dc = DeepCacheUNet(unet, cache_point=p.name)
        if full is None:  # the full step does not depend on the cache point
            full = count_macs(_Path(dc, False, None, c1), (x, t)).total
        with torch.no_grad():
            _, feat = dc.full(x, t, **c1)
        shallow = count_macs(_Path(dc, True, feat, c1), (x, t)).total
        rows.append({"cache_point": p.name, "mirror": p.mirror, "skips": p.skips, "full_macs": full,
                     "cached_macs": shallow, "fraction": shallow / full, "ceiling": full / max(shallow, 1)})
    return rows


def step_bops(dc: DeepCacheUNet, example: torch.Tensor, t: Any = 10,
              cond: dict | None = None) -> dict[str, int]:
    """Per-sample BOPs (MACs x w_bits x a_bits of Linear/Conv layers, FP = 32 x 32) of a full and a
    cached step; the bit widths are those of a fake-quantized U-Net (`methods.quant.count_macs_bops`)."""
    from methods.quant import count_macs_bops

    cond = cond or {}
    x = example[:1]
    c1 = {k: (v[:1] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in cond.items()}
    _, feat = dc.full(x, t, **c1)
    return {"full": count_macs_bops(_FixedT(_Path(dc, False, None, c1), t), x)["bops"],
            "shallow": count_macs_bops(_FixedT(_Path(dc, True, feat, c1), t), x)["bops"]}


class _FixedT(nn.Module):
    def __init__(self, path: _Path, t: Any) -> None:
        super().__init__()
        self.path, self.t = path, t

    def forward(self, x):
        return self.path(x, self.t)


def loop_macs(macs: dict[str, int], steps: int, refresh: list[int] | tuple[int, ...]) -> dict[str, float]:
    """Per-sample MACs of a sampling loop and its speed-up over running every step in full."""
    n_full = len(check_refresh_steps(refresh, steps))
    total = n_full * macs["full"] + (steps - n_full) * macs["shallow"]
    return {"loop_macs": float(total), "mac_speedup": steps * macs["full"] / total}


@dataclass
class DeepCacheSampler:
    """`sample(noise)` runs `sample_loop` with fixed refresh steps (every step: the plain sampler)."""

    dc: DeepCacheUNet
    scheduler: Any
    steps: int
    refresh: list[int]

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        return sample_loop(self.dc, self.scheduler, noise, self.steps, self.refresh, cond=cond)


def deepcache_method(unet: nn.Module, scheduler: Any, steps: int, config: DeepCacheConfig | None = None,
                     calib_noise: torch.Tensor | None = None, cond: dict | None = None) -> DeepCacheSampler:
    """`DIFFUSION_METHODS` entry (methods/diffusion.py): the U-Net cached at `config.branch` with
    the config's refresh schedule. DeepCache needs no calibration: `calib_noise` and `cond` are unused."""
    config = config or DeepCacheConfig()
    dc = DeepCacheUNet(unet, config.branch, config.cache_point)
    return DeepCacheSampler(dc, scheduler, steps, config.refresh_steps(steps))
