"""CacheQuant: DPS optimality, closed-form corrections, per-timestep quantizers, end-to-end preparation."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_diffusion import tiny_scheduler, tiny_unet

from methods.cachequant import (
    CacheQuantConfig,
    CorrectedLayer,
    StepActQuant,
    StepClock,
    apply_affine,
    brute_force,
    channel_affine,
    distance_table,
    dps,
    dps_schedule,
    fit_cache_correction,
    group_bounds,
    group_cost,
    prepare_cachequant,
    schedule_cost,
    step_act_quantizers,
)
from methods.deepcache import DeepCacheUNet, uniform_schedule
from methods.errors import ConfigError
from methods.quant import check_ready_for_eval

STEPS = 8


@pytest.mark.parametrize("seed", range(5))
def test_dps_equals_brute_force_T12_K3(seed):
    gen = torch.Generator().manual_seed(seed)
    lo, hi = group_bounds(4)  # N = 4 -> lengths 2..8, K = ceil(12/4) = 3
    d = torch.rand(12, 12, generator=gen, dtype=torch.float64).triu()
    cost = group_cost(d)
    starts, best = dps(cost, 12, 3, lo, hi)
    bf_starts, bf_best = brute_force(cost, 12, 3, lo, hi)
    assert best == pytest.approx(bf_best) and starts[0] == 0
    assert schedule_cost(cost, starts, 12) == pytest.approx(best)
    assert best <= schedule_cost(cost, uniform_schedule(12, 4), 12) + 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_dps_on_feature_distances_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    feats = list(torch.randn(10, 2, 3, 4, 4, generator=gen).cumsum(0))  # drifting features
    cost = group_cost(distance_table(feats))
    lo, hi = group_bounds(3)
    k = math.ceil(10 / 3)
    assert dps(cost, 10, k, lo, hi)[1] == pytest.approx(brute_force(cost, 10, k, lo, hi)[1])
    sched = dps_schedule(feats, 3)
    assert sched[0] == 0 and len(sched) == k


def test_dps_infeasible_bounds_raise():
    with pytest.raises(ConfigError, match="cannot split"):
        dps(group_cost(torch.zeros(5, 5, dtype=torch.float64)), 5, 1, 1, 2)


def test_channel_affine_equals_lstsq():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=gen)
    y = 1.7 * x + 0.3 * torch.randn(4, 3, 5, 5, generator=gen) - 0.2
    a, b = channel_affine(x, y)
    for c in range(3):
        xc, yc = x[:, c].reshape(-1, 1).double(), y[:, c].reshape(-1, 1).double()
        sol = torch.linalg.lstsq(torch.cat([xc, torch.ones_like(xc)], 1), yc).solution
        assert a[c].item() == pytest.approx(sol[0].item(), rel=1e-4)
        assert b[c].item() == pytest.approx(sol[1].item(), abs=1e-4)


def test_channel_affine_moments_keeps_each_channels_mean_and_variance_where_lstsq_shrinks_them():
    """y = rho-correlated with x: least squares leaves Var(a x + b) = rho^2 Var(y); moment matching
    keeps Var(y) and E[y] per channel, and the sign of the correlation (channel 1 is anti-correlated)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, 6, 6, generator=gen)
    noise = torch.randn(64, 2, 6, 6, generator=gen)
    y = 0.6 * x + 0.8 * noise + 0.5
    y[:, 1] = -y[:, 1]
    for est in ("lstsq", "moments"):
        a, b = channel_affine(x, y, estimator=est)
        fixed = apply_affine(x, a, b)
        for c in range(2):
            f, t = fixed[:, c].double(), y[:, c].double()
            rho2 = torch.corrcoef(torch.stack([x[:, c].reshape(-1).double(), t.reshape(-1)]))[0, 1] ** 2
            assert f.mean().item() == pytest.approx(t.mean().item(), abs=1e-5)
            want = t.var() if est == "moments" else rho2 * t.var()
            assert f.var().item() == pytest.approx(want.item(), rel=1e-3)
            assert (a[c] > 0) == (c == 0)
    lstsq_mse = (apply_affine(x, *channel_affine(x, y)) - y).pow(2).mean()
    moments_mse = (apply_affine(x, *channel_affine(x, y, estimator="moments")) - y).pow(2).mean()
    assert lstsq_mse < moments_mse  # least squares is the MSE optimum; moments trade MSE for spread
    with pytest.raises(ConfigError, match="estimator"):
        channel_affine(x, y, estimator="median")


def test_cache_correction_lowers_every_cached_step_error():
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    fix = fit_cache_correction(DeepCacheUNet(unet, 0), sched, STEPS, [0, 4], noise)
    assert sorted(fix.errors) == [1, 2, 3, 5, 6, 7]
    for before, after in fix.errors.values():
        assert after <= before + 1e-9
    assert sum(a for _, a in fix.errors.values()) < sum(b for b, _ in fix.errors.values())


def test_prepare_quantized_with_both_corrections():
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    cfg = CacheQuantConfig(interval=4, schedule="dps", bits="w4a8", calib_samples=4, dps_samples=4)
    s = prepare_cachequant(unet, sched, STEPS, cfg, noise)
    rep = s.report
    assert s.refresh[0] == 0 and len(s.refresh) == 2
    assert rep["dps_objective"] <= rep["uniform_objective"] + 1e-9
    assert rep["cache_dec_mse_after"] < rep["cache_dec_mse_before"]
    # the quantization correction lowers the consumer layers' output error at every step
    layers = [m for m in s.dc.unet.modules() if isinstance(m, CorrectedLayer)]
    assert len(layers) == 2
    for layer in layers:
        assert len(layer.errors) == STEPS
        assert all(after <= before + 1e-9 for before, after in layer.errors.values())
    assert rep["quant_dec_mse_after"] < rep["quant_dec_mse_before"]
    check_ready_for_eval(s.dc.unet)
    # one activation range per timestep: the tables differ across steps
    q = step_act_quantizers(s.dc.unet)[0]
    assert q.tq.step.numel() == STEPS and q.tq.step[s.refresh].unique().numel() == len(s.refresh)
    out = s.sample(noise)
    assert out.shape == noise.shape and torch.isfinite(out).all()


def test_step_act_quant_uses_the_clock_entry():
    clock = StepClock()
    q = StepActQuant(4, 3, clock, observer="minmax")
    for i, scale in enumerate((1.0, 10.0, 100.0)):
        clock.set(i)
        q.start_observing()
        q(torch.linspace(-scale, scale, 101).reshape(1, 1, -1))
        q.finish_observing()
    steps = q.tq.step.tolist()
    assert steps[0] < steps[1] < steps[2]
    x = torch.linspace(-1, 1, 101).reshape(1, 1, -1)
    clock.set(0)
    fine = (q(x) - x).abs().max()
    clock.set(2)
    coarse = (q(x) - x).abs().max()
    assert fine < coarse


def test_qdps_schedule_and_config_validation():
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    cfg = CacheQuantConfig(
        interval=4,
        schedule="qdps",
        bits="w4a8",
        cache_dec=False,
        quant_dec=False,
        calib_samples=2,
        dps_samples=2,
    )
    s = prepare_cachequant(unet, sched, STEPS, cfg, noise)
    assert s.refresh[0] == 0 and len(s.refresh) == 2
    with pytest.raises(ConfigError, match="qdps"):
        CacheQuantConfig(schedule="qdps", bits="fp")
    with pytest.raises(ConfigError, match="bits"):
        CacheQuantConfig(bits="w3a3x")
    assert "schedule" in CacheQuantConfig.search_space()


def test_config_bits_use_the_one_bits_spec():
    cfg = CacheQuantConfig(bits="W4A8")
    qc = cfg.quant_config()
    assert cfg.bits == "w4a8" and cfg.quantized and (qc.w_bits, qc.a_bits) == (4, 8)
    assert not CacheQuantConfig(bits="FP").quantized
    for bad, problem in (("w4a8kv8", "no KV cache"), ("w1a8", "weight bits 1 lie outside 2..16"),
                         ("w4a8,attn=w8a8", "per-module overrides")):
        with pytest.raises(ConfigError, match=f"CacheQuant bits: .*{problem}"):
            CacheQuantConfig(bits=bad)


def test_diffusion_methods_share_one_prepare_and_sample_signature():
    from methods.diffusion import DIFFUSION_METHODS, DiffusionSampler

    assert DIFFUSION_METHODS.names() == [
        "cachequant", "deepcache", "diffusion_qat", "dilatequant", "efficientdm", "qdiffusion"
    ]
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    small = {"cachequant": {"interval": 3, "bits": "w8a8", "calib_samples": 2, "dps_samples": 2},
             "deepcache": {"interval": 3}, "qdiffusion": {"cali_n": 2, "cali_st": 2}}
    for name, config in small.items():
        sampler = DIFFUSION_METHODS.create(name, **config)(unet, sched, STEPS)
        assert isinstance(sampler, DiffusionSampler)
        x0 = sampler.sample(noise)
        assert x0.shape == noise.shape and torch.isfinite(x0).all(), name


def test_cache_point_at_branch_zero_address_equals_branch_zero_exactly():
    """`up.1.res.0` is the input of the last up-block: the same cache as branch 0, bit for bit."""
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    base = dict(interval=4, schedule="dps", bits="w8a8", calib_samples=4, dps_samples=4)
    a = prepare_cachequant(unet, sched, STEPS, CacheQuantConfig(**base), noise)
    b = prepare_cachequant(unet, sched, STEPS, CacheQuantConfig(**base, cache_point="up.1.res.0"), noise)
    assert a.refresh == b.refresh
    assert torch.equal(a.sample(noise), b.sample(noise))


def test_cache_point_inside_a_block_changes_the_cache_and_its_consumers():
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    cfg = CacheQuantConfig(interval=4, schedule="uniform", bits="w8a8", calib_samples=4, dps_samples=4,
                           cache_point="up.1.res.1")
    s = prepare_cachequant(unet, sched, STEPS, cfg, noise)
    assert s.dc.cache_point == "up.1.res.1"
    wrapped = sorted(n for n, m in s.dc.unet.named_modules() if isinstance(m, CorrectedLayer))
    # the cache enters resnets[1] of the last up-block: its conv1 and 1x1 shortcut are corrected
    assert wrapped == ["up_blocks.1.resnets.1.conv1", "up_blocks.1.resnets.1.conv_shortcut"]
    branch = prepare_cachequant(unet, sched, STEPS, CacheQuantConfig(
        interval=4, schedule="uniform", bits="w8a8", calib_samples=4, dps_samples=4), noise)
    assert not torch.equal(s.sample(noise), branch.sample(noise))


def test_cache_point_at_an_attention_input_corrects_nothing():
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    cfg = CacheQuantConfig(interval=4, schedule="uniform", bits="w8a8", calib_samples=2, dps_samples=2,
                           cache_point="up.0.attn.1")
    s = prepare_cachequant(unet, sched, STEPS, cfg, noise)
    assert not any(isinstance(m, CorrectedLayer) for m in s.dc.unet.modules())
    assert torch.isfinite(s.sample(noise)).all()


def test_cache_point_config_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="block address"):
        CacheQuantConfig(cache_point="up.x.res")
    with pytest.raises(ConfigError, match="not both"):
        CacheQuantConfig(cache_point="up.1.res.0", branch=1)
    with pytest.raises(ConfigError, match="Valid"):  # well formed, but not a block of this U-Net
        prepare_cachequant(tiny_unet(), tiny_scheduler(), STEPS, CacheQuantConfig(
            interval=4, schedule="uniform", bits="fp", cache_point="up.5.res.0"), torch.randn(8, 1, 8, 8))
    assert CacheQuantConfig(cache_point="up.1.res.1").cache_at == "up.1.res.1"
    assert CacheQuantConfig(branch=1).cache_at == "branch.1"
