"""DeepCache on diffusers U-Nets: exactness of refresh/shallow paths, MAC savings, schedule indices."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_diffusion import tiny_cond_unet, tiny_scheduler, tiny_unet

from methods.deepcache import (
    DeepCacheConfig,
    DeepCacheUNet,
    cache_schedule,
    check_refresh_steps,
    loop_macs,
    nonuniform_schedule,
    sample_loop,
    step_macs,
    uniform_schedule,
)
from methods.errors import ConfigError


@pytest.mark.parametrize("branch", [0, 1])
def test_refresh_equals_plain_forward_and_shallow_reuses_exactly(branch):
    unet, x = tiny_unet(), torch.randn(3, 1, 8, 8)
    dc = DeepCacheUNet(unet, branch)
    with torch.no_grad():
        ref = unet(x, 400).sample
        out, feat = dc.full(x, 400)
        # the shallow branch fed the feature of the same input and step reproduces the full output
        shallow = dc.shallow(x, 400, feat)
    assert torch.equal(out, ref)
    assert torch.equal(shallow, ref)
    assert feat.shape[0] == 3 and feat.shape[1] < unet.up_blocks[dc.up_index].resnets[0].in_channels


@pytest.mark.parametrize("branch", [0, 1])
def test_conditional_unet_refresh_and_shallow_exact(branch):
    unet, x, e = tiny_cond_unet(), torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8)
    dc = DeepCacheUNet(unet, branch)
    with torch.no_grad():
        ref = unet(x, 300, encoder_hidden_states=e).sample
        out, feat = dc.full(x, 300, encoder_hidden_states=e)
        shallow = dc.shallow(x, 300, feat, encoder_hidden_states=e)
    assert torch.equal(out, ref)
    assert torch.allclose(shallow, ref, atol=1e-6)


def test_cached_steps_cost_fewer_macs():
    dc = DeepCacheUNet(tiny_unet(), 0)
    macs = step_macs(dc, torch.randn(2, 1, 8, 8))
    assert 0 < macs["shallow"] < macs["full"]
    deeper = step_macs(DeepCacheUNet(dc.unet, 1), torch.randn(2, 1, 8, 8))
    assert macs["shallow"] < deeper["shallow"] <= deeper["full"]
    lm = loop_macs(macs, 10, uniform_schedule(10, 5))
    assert lm["loop_macs"] == 2 * macs["full"] + 8 * macs["shallow"]
    assert lm["mac_speedup"] == pytest.approx(10 * macs["full"] / lm["loop_macs"])
    assert loop_macs(macs, 10, list(range(10)))["mac_speedup"] == 1.0


def test_sample_loop_every_step_refresh_equals_plain_sampler():
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(2, 1, 8, 8)
    got = sample_loop(DeepCacheUNet(unet, 0), sched, noise, 6, list(range(6)))
    sched.set_timesteps(6)
    x = noise
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
    assert torch.equal(got, x)
    cached = sample_loop(DeepCacheUNet(unet, 0), sched, noise, 6, [0, 3])
    assert not torch.equal(cached, x)  # cached steps really reuse a stale feature


def test_uniform_schedule_indices():
    assert uniform_schedule(10, 3) == [0, 3, 6, 9]
    assert uniform_schedule(50, 5) == list(range(0, 50, 5))
    assert uniform_schedule(7, 1) == list(range(7))


def test_nonuniform_schedule_matches_hand_derived_indices():
    # v = linspace(-15^(1/1.4), 35^(1/1.4), 11); 15 + trunc(sign(v)|v|^1.4), ends dropped, 0 prepended
    assert nonuniform_schedule(50, 5, center=15, power=1.4) == [0, 6, 11, 14, 15, 19, 24, 29, 35, 42]


@pytest.mark.parametrize(
    "steps,interval,center", [(50, 5, 15), (50, 3, 20), (20, 4, 6), (100, 10, 30), (12, 2, 3)]
)
def test_nonuniform_schedule_properties(steps, interval, center):
    idx = nonuniform_schedule(steps, interval, center)
    assert len(idx) == math.ceil(steps / interval)
    assert idx[0] == 0 and all(a < b for a, b in zip(idx, idx[1:], strict=False)) and idx[-1] < steps
    gaps = [b - a for a, b in zip(idx, idx[1:], strict=False)]
    near = min(range(len(idx)), key=lambda k: abs(idx[k] - center))
    # refreshes are densest around the centre: the gap there is no larger than the last gap
    assert gaps[min(near, len(gaps) - 1)] <= gaps[-1]


def test_step_zero_always_refreshes():
    for kind in ("uniform", "nonuniform"):
        for steps, n in [(10, 3), (50, 5), (25, 7)]:
            assert cache_schedule(kind, steps, n)[0] == 0
    with pytest.raises(ConfigError, match="step 0"):
        check_refresh_steps([2, 5], 10)
    with pytest.raises(ConfigError):
        check_refresh_steps([0, 10], 10)


def test_config_validation_and_search_space():
    with pytest.raises(ConfigError):
        DeepCacheConfig(interval=0)
    with pytest.raises(ConfigError):
        DeepCacheConfig(schedule="quad")
    cfg = DeepCacheConfig(interval=3, schedule="nonuniform")
    assert cfg.refresh_steps(30)[0] == 0 and cfg.to_dict()["interval"] == 3
    assert set(DeepCacheConfig.search_space()) == {"interval", "schedule", "branch"}
    with pytest.raises(ConfigError, match="branch"):
        DeepCacheUNet(tiny_unet(), 2)


# ----------------------------------------------------------------------------- ResBlock-level cache points
def _unet2d_lpb2():
    from diffusers import UNet2DModel

    torch.manual_seed(1)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=2,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()


def _cond_lpb2():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(2)
    return UNet2DConditionModel(sample_size=8, in_channels=2, out_channels=2, layers_per_block=2,
                                block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=8,
                                attention_head_dim=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()


def _beds():
    torch.manual_seed(3)
    e = torch.randn(2, 5, 8)
    return [("unet2d", tiny_unet(), torch.randn(2, 1, 8, 8), {}),
            ("unet2d_lpb2", _unet2d_lpb2(), torch.randn(2, 1, 8, 8), {}),
            ("cond", tiny_cond_unet(), torch.randn(2, 4, 8, 8), {"encoder_hidden_states": e}),
            # 7x7 input: the conditional U-Net forwards explicit upsample sizes (7 -> 4 -> 7)
            ("cond_lpb2_odd", _cond_lpb2(), torch.randn(2, 2, 7, 7), {"encoder_hidden_states": e})]


BEDS = _beds()


@pytest.mark.parametrize("bed", BEDS, ids=[b[0] for b in BEDS])
def test_every_cache_point_shallow_on_own_feature_equals_uncached(bed):
    from methods.unet_blocks import cache_points

    _, unet, x, cond = bed
    points = cache_points(unet)
    assert any(p.kind == "attn" for p in points) and any(p.kind == "res" and p.index > 0 for p in points)
    with torch.no_grad():
        ref = unet(x, 321, **cond).sample
        for p in points:
            dc = DeepCacheUNet(unet, cache_point=p.name)
            out, feat = dc.full(x, 321, **cond)
            assert torch.equal(out, ref), p.name
            shallow = dc.shallow(x, 321, feat, **cond)
            assert torch.allclose(shallow, ref, atol=1e-5, rtol=1e-5), (p.name, (shallow - ref).abs().max())
            # the cached feature really feeds the shallow path (a constant shift could be normalised away)
            other = feat + 0.5 * torch.randn_like(feat)
            assert not torch.allclose(dc.shallow(x, 321, other, **cond), ref, atol=1e-3), p.name


@pytest.mark.parametrize("bed", BEDS[:3:2], ids=[b[0] for b in BEDS[:3:2]])
def test_interval_one_equals_plain_sampler_for_every_cache_point(bed):
    from methods.unet_blocks import cache_points

    _, unet, x, cond = bed
    sched = tiny_scheduler()
    sched.set_timesteps(3)
    ref = x
    with torch.no_grad():
        for t in sched.timesteps:
            ref = sched.step(unet(ref, t, **cond).sample, t, ref).prev_sample
    for p in cache_points(unet):
        dc = DeepCacheUNet(unet, cache_point=p.name)
        assert torch.allclose(sample_loop(dc, sched, x, 3, [0, 1, 2], cond=cond), ref, atol=1e-6), p.name
        # refresh only at step 0: the shallow path with a stale feature, still close for nearby steps
        stale = sample_loop(dc, sched, x, 3, [0], cond=cond)
        assert not torch.equal(stale, ref) and torch.isfinite(stale).all()


MAC_BEDS = [pytest.param(b, marks=[pytest.mark.slow] if b[0] in ("unet2d", "cond_lpb2_odd") else [], id=b[0])
            for b in BEDS]


@pytest.mark.parametrize("bed", MAC_BEDS)
def test_cached_step_mac_fraction_falls_as_cache_point_gets_shallower(bed):
    from methods.deepcache import cache_point_macs

    _, unet, x, cond = bed
    rows = cache_point_macs(unet, x, 321, cond)
    fr = [r["fraction"] for r in rows]
    assert all(0 < f < 1 for f in fr)
    table = [(r["cache_point"], r["fraction"]) for r in rows]
    assert all(a > b for a, b in zip(fr, fr[1:], strict=False)), table
    full = {r["full_macs"] for r in rows}
    assert len(full) == 1
    # the same counts as step_macs, the per-cache-point function the model shard uses
    first, last = DeepCacheUNet(unet, cache_point=rows[0]["cache_point"]), rows[-1]["cache_point"]
    assert step_macs(first, x, 321, cond) == {"full": rows[0]["full_macs"], "shallow": rows[0]["cached_macs"]}
    shallowest = step_macs(DeepCacheUNet(unet, cache_point=last), x, 321, cond)
    assert shallowest["shallow"] == rows[-1]["cached_macs"]
    assert all(r["ceiling"] == pytest.approx(1 / r["fraction"]) for r in rows)


def test_branch_addressing_is_the_block_input_cache_point_and_skips_the_unused_downsampler():
    unet, x = tiny_unet(), torch.randn(2, 1, 8, 8)
    n = len(unet.up_blocks)
    for b in range(n):
        by_branch, by_name = DeepCacheUNet(unet, b), DeepCacheUNet(unet, cache_point=f"up.{n - 1 - b}.res.0")
        assert by_branch.cache_point == by_name.cache_point and by_branch.up_index == n - 1 - b
        assert step_macs(by_branch, x) == step_macs(by_name, x)
    calls = []
    hook = unet.down_blocks[0].downsamplers[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        dc = DeepCacheUNet(unet, 0)
        with torch.no_grad():
            _, feat = dc.full(x, 50)
            calls.clear()
            dc.shallow(x, 50, feat)
    finally:
        hook.remove()
    assert calls == []  # branch 0 consumes conv_in and down.0.res.0 only


def test_down_side_addresses_name_the_mirror_up_resblock():
    from methods.unet_blocks import resolve

    unet = tiny_unet()  # skips: conv_in, down.0.res.0, down.0.down, down.1.attn.0
    assert resolve(unet, "down.0.down").name == "up.0.res.1"  # DDPM branch 2: the downsampler's skip
    assert resolve(unet, "down.0.res.0").name == "up.1.res.0"
    assert resolve(unet, "down.1.res.0").name == resolve(unet, "down.1.attn.0").name == "up.0.res.0"
    assert resolve(unet, "branch.0").name == "up.1.res.0"
    assert resolve(unet, " up.0.attn.1 ").name == "up.0.attn.1"
    cond = tiny_cond_unet()  # CrossAttnDownBlock2D then DownBlock2D; UpBlock2D then CrossAttnUpBlock2D
    assert resolve(cond, "down.0.attn.0").name == "up.1.res.0"
    assert [p.name for p in __import__("methods.unet_blocks").unet_blocks.cache_points(cond)][-2:] == [
        "up.1.res.1", "up.1.attn.1"]


@pytest.mark.parametrize("bad", ["up.5.res.0", "up.1.res.7", "up.1.attn.0", "down.0.attn.0", "down.1.down",
                                 "mid", "up.1.resnet.0", "branch.2"])
def test_bad_cache_point_is_a_config_error_naming_the_valid_ones(bad):
    with pytest.raises(ConfigError, match=r"not a block of this UNet2DModel.*up\.0\.res\.0, up\.0\.attn\.0"):
        DeepCacheUNet(tiny_unet(), cache_point=bad)


def test_cache_point_config_validation():
    with pytest.raises(ConfigError, match="block address"):
        DeepCacheConfig(cache_point="up_blocks.1")
    with pytest.raises(ConfigError, match="not both"):
        DeepCacheConfig(cache_point="up.1.res.0", branch=1)
    with pytest.raises(ConfigError, match="not both"):
        DeepCacheUNet(tiny_unet(), 1, "up.1.res.0")
    from methods.deepcache import deepcache_method

    cfg = DeepCacheConfig(interval=2, cache_point="up.1.res.1")
    s = deepcache_method(tiny_unet(), tiny_scheduler(), 10, cfg)
    assert s.dc.cache_point == "up.1.res.1" and s.refresh == [0, 2, 4, 6, 8]


@pytest.mark.slow
def test_ddpm_cifar10_cached_step_fractions_match_the_official_deepcache_numbers():
    """The official DDPM-CIFAR DeepCache caches at one ResBlock: a cached step costs 21 % of a full
    step at its branch 0 (level 0, block 0) and 54 % at branch 2 (level 0's downsampler), the
    numbers in reference/quant.md § 3.2; the same points here are down.0.res.0 and down.0.down."""
    from diffusers import UNet2DModel

    from methods.deepcache import cache_point_macs

    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(128, 256, 256, 256), attention_head_dim=None,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")).eval()
    rows = cache_point_macs(unet, torch.randn(1, 3, 32, 32), 500, points=["down.0.res.0", "down.0.down"])
    assert [r["cache_point"] for r in rows] == ["up.3.res.1", "up.2.res.2"]
    assert rows[0]["fraction"] == pytest.approx(0.21, abs=0.01)
    assert rows[1]["fraction"] == pytest.approx(0.54, abs=0.02)
