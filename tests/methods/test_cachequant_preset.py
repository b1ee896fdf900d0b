"""CacheQuant's switches toward the official DDPM-CIFAR path (`preset_config('official')`): the cache DEC
regressed on an always-refresh FP run, chunked running-average activation ranges with the MSE p,
the cached-half shortcut correction, quantized attention products and quadratic spacing."""

from __future__ import annotations

import pytest
import torch
from tiny_diffusion import tiny_scheduler, tiny_unet
from torch import nn

from methods.cachequant import (
    PRESETS,
    CacheQuantConfig,
    HalfCorrectedShortcut,
    StepActQuant,
    StepClock,
    apply_affine,
    channel_affine,
    fit_cache_correction,
    fit_cache_correction_refresh,
    prepare_cachequant,
    preset_config,
    record_features,
    step_act_quantizers,
)
from methods.deepcache import DeepCacheUNet
from methods.errors import ConfigError
from methods.quant import QuantConfig
from methods.quant.modules import QuantConv2d
from methods.quant.observers import mse_range
from methods.quant.primitives import choose_qparams

STEPS = 8
SMALL = {"dps_samples": 2, "dec_samples": 3, "calib_samples": 2}  # the official sizes, shrunk for tests


def test_preset_official_sets_every_switch_and_fields_override_it():
    cfg = preset_config("official", interval=4)
    assert (cfg.dec_fit, cfg.act_observer, cfg.act_p, cfg.act_chunk, cfg.attn_quant, cfg.quant_dec_on,
            cfg.spacing) == ("refresh", "mse", 2.4, 32, True, "shortcut_half", "quad")
    assert (cfg.dps_samples, cfg.dec_samples, cfg.calib_samples, cfg.interval) == (128, 512, 64, 4)
    assert cfg.noise_needed == 512
    assert preset_config("official", act_p=2.0).act_p == 2.0  # an explicit field wins
    assert preset_config() == CacheQuantConfig()  # 'ours' is the plain defaults
    assert set(PRESETS) == {"ours", "official"}
    with pytest.raises(ConfigError, match="official"):
        preset_config("oficial")
    for bad in ({"dec_fit": "fp"}, {"quant_dec_on": "half"}, {"spacing": "quadratic"}, {"act_chunk": -1}):
        with pytest.raises(ConfigError, match="must be|need"):
            CacheQuantConfig(**bad)


def test_refresh_dec_regresses_each_cached_step_on_its_groups_refresh_feature():
    """Independent check: features of one always-refresh FP run; step i's (a, b) fits F_i on F_r(i),
    r(i) the last refresh step <= i (not the previous step, not the cached trajectory)."""
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    dc, refresh = DeepCacheUNet(unet, 0), [0, 3, 6]
    fix = fit_cache_correction_refresh(dc, sched, STEPS, refresh, noise)
    feats = record_features(dc, sched, noise, STEPS)
    assert sorted(fix.params) == [1, 2, 4, 5, 7]
    for i in fix.params:
        r = max(s for s in refresh if s <= i)
        a, b = channel_affine(feats[r], feats[i])
        assert torch.allclose(fix.params[i][0], a, atol=1e-6)
        assert torch.allclose(fix.params[i][1], b, atol=1e-6)
        before, after = fix.errors[i]
        assert after <= before
    cached = fit_cache_correction(dc, sched, STEPS, refresh, noise)  # [ours]: the cached trajectory
    assert not torch.allclose(cached.params[2][0], fix.params[2][0])  # step 2's X differs between the two


def test_chunked_ranges_are_the_09_01_running_average_of_per_chunk_ranges():
    clock = StepClock()
    q = StepActQuant(8, 2, clock, observer="minmax", chunk=2)
    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    x = x * torch.arange(1, 7).view(6, 1, 1, 1)  # chunks with different spreads
    q.enabled = False
    q.start_observing()
    q(x)
    q.finish_observing()
    los = [x[k:k + 2].min() for k in (0, 2, 4)]
    his = [x[k:k + 2].max() for k in (0, 2, 4)]
    lo, hi = los[0], his[0]
    for a, b in zip(los[1:], his[1:], strict=True):
        lo, hi = 0.9 * lo + 0.1 * a, 0.9 * hi + 0.1 * b
    step, zero = choose_qparams(lo.reshape(()), hi.reshape(()), 8, False)
    assert torch.allclose(q.tq.step[0], step) and torch.allclose(q.tq.zero[0], zero)
    whole = StepActQuant(8, 2, clock, observer="minmax")
    whole.start_observing()
    whole(x)
    whole.finish_observing()
    assert not torch.allclose(whole.tq.step[0], q.tq.step[0])  # one range over all 6 is wider


def test_mse_activation_ranges_use_the_configured_p():
    x = torch.randn(1, 8192, generator=torch.Generator().manual_seed(0))
    x[0, :40] *= 12  # a few outliers: a larger p weighs them more and keeps a wider range
    steps = {}
    for p in (2.0, 2.4):
        q = StepActQuant(4, 1, StepClock(), observer="mse", p=p, max_elems=1 << 16)
        q.start_observing()
        q(x)
        q.finish_observing()
        lo, hi = mse_range(x, 4, False, p)
        assert torch.allclose(q.tq.step[0], choose_qparams(lo.reshape(()), hi.reshape(()), 4, False)[0])
        steps[p] = float(q.tq.step[0])
    assert steps[2.4] > steps[2.0] * 1.2


def _shortcut(x: torch.Tensor, split: int = 3):
    """A 3-bit 1x1 QuantConv2d whose weights *and* input quantizer are calibrated (on `x`), so Q(x) != x."""
    conv = nn.Conv2d(5, 4, 1)
    torch.nn.init.normal_(conv.weight, std=0.5)
    layer = QuantConv2d(conv, 3, 3, QuantConfig(w_bits=3, a_bits=3))
    layer.calibrate_weight()
    clock = StepClock()
    layer.a_quant = StepActQuant(3, 1, clock, observer="minmax")
    layer.a_quant.start_observing()
    layer.a_quant(x)
    layer.a_quant.finish_observing()
    assert not torch.allclose(layer.a_quant(x), x)
    return layer, HalfCorrectedShortcut(layer, clock, split)


def test_half_corrected_shortcut_without_params_is_the_layer_and_corrects_only_the_cached_half():
    x = torch.randn(6, 5, 4, 4, generator=torch.Generator().manual_seed(1))
    layer, half = _shortcut(x)
    assert torch.allclose(half(x), layer(x), atol=1e-5)  # the split sum is the whole convolution
    half.fitting = True
    fixed = half(x)
    half.fitting = False
    wq, w = layer.qweight(), layer.weight
    xq = layer.a_quant(x)
    cached_q = torch.nn.functional.conv2d(xq[:, :3], wq[:, :3])
    rest = torch.nn.functional.conv2d(xq[:, 3:], wq[:, 3:], layer.bias)
    truth = torch.nn.functional.conv2d(x[:, :3], w[:, :3])
    a, b = channel_affine(cached_q, truth)  # independent regression of the cached half only
    assert torch.allclose(fixed, apply_affine(cached_q, a, b) + rest, atol=1e-5)
    assert torch.allclose(half(x), fixed, atol=1e-6)  # applied at inference as fitted
    before, after = half.errors[0]
    assert after < before
    folded = torch.nn.functional.conv2d(xq[:, :3], wq[:, :3] * a.view(-1, 1, 1, 1), b)  # scale in the weights
    assert torch.allclose(folded + rest, fixed, atol=1e-5)
    with pytest.raises(ConfigError, match="cached half"):
        HalfCorrectedShortcut(layer, StepClock(), 5)


def test_official_preset_prepares_end_to_end_with_each_switch_in_force():
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    cfg = preset_config("official", interval=4, schedule="uniform", bits="w8a8", act_chunk=1, **SMALL)
    s = prepare_cachequant(unet, sched, STEPS, cfg, noise)
    assert type(s.scheduler).__name__ == "SpacedDDIM"
    halves = [m for m in s.dc.unet.modules() if isinstance(m, HalfCorrectedShortcut)]
    assert len(halves) == 1 and halves[0].params  # only the cached half of the shortcut
    plain = CacheQuantConfig(interval=4, schedule="uniform", bits="w8a8", calib_samples=2, dps_samples=2)
    ours = prepare_cachequant(unet, sched, STEPS, plain, noise)
    assert len(step_act_quantizers(s.dc.unet)) > len(step_act_quantizers(ours.dc.unet))  # attention products
    x = s.sample(torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4)))
    assert torch.isfinite(x).all()
    assert s.report["cache_dec_mse_after"] <= s.report["cache_dec_mse_before"]
    with pytest.raises(ConfigError, match="calibration noise samples"):
        prepare_cachequant(unet, sched, STEPS, cfg, noise[:2])
