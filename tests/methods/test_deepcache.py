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
