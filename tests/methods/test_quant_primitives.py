"""Algebra of the quantization primitives, observers and quantizer modules."""

from __future__ import annotations

import math

import pytest
import torch

from methods.errors import ConfigError
from methods.quant import observers as obs
from methods.quant.primitives import (
    Granularity,
    choose_qparams,
    fake_quantize,
    fake_quantize_blocked,
    from_blocks,
    lsq_grad_scale,
    qrange,
    to_blocks,
)
from methods.quant.quantizers import (
    AdaRound,
    Log2Quantizer,
    TimestepQuantizer,
    UniformQuantizer,
    anneal_beta,
    golden_section,
    log2_fake_quant,
    shift_dequant,
)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_round_trip_error_at_most_half_step_inside_range(bits, symmetric):
    x = torch.randn(4096) * 3
    lo, hi = x.min(), x.max()
    step, zero = choose_qparams(lo, hi, bits, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    xq = fake_quantize(x, step, zero, qmin, qmax)
    inside = (x >= (qmin - zero) * step) & (x <= (qmax - zero) * step)
    assert inside.float().mean() > 0.9
    assert (xq - x)[inside].abs().max() <= step / 2 + 1e-6
    assert xq.unique().numel() <= 2**bits


def test_zero_is_exactly_representable_and_range_contains_zero():
    step, zero = choose_qparams(torch.tensor(0.5), torch.tensor(3.0), 4, False)
    assert zero == 0  # l clamped to 0
    assert fake_quantize(torch.tensor(0.0), step, zero, 0, 15) == 0
    sym_min, sym_max = qrange(4, True)
    assert (sym_min, sym_max) == (-7, 7)


@pytest.mark.parametrize(
    "gran,shape",
    [
        (Granularity("tensor"), (8, 6)),
        (Granularity("channel", 0), (8, 6, 3, 3)),
        (Granularity("channel", 1), (2, 5, 7)),
        (Granularity("group", 0, 4), (8, 12)),
    ],
)
def test_blocked_view_round_trips_and_error_is_within_half_a_step(gran, shape):
    x = torch.randn(shape) * torch.linspace(0.1, 5, shape[0]).reshape(-1, *([1] * (len(shape) - 1)))
    blocks = to_blocks(x, gran)
    assert torch.equal(from_blocks(blocks, x, gran), x)
    lo, hi = obs.minmax_range(blocks)
    step, zero = choose_qparams(lo, hi, 4, False)
    xq = fake_quantize_blocked(x, step, zero, 4, False, gran)
    assert xq.shape == x.shape
    assert (to_blocks((xq - x).abs(), gran) <= step / 2 + 1e-6).all()


def test_per_channel_beats_per_tensor_when_channel_ranges_differ():
    """(Was a half-step bound only, which per-tensor quantization also meets.) With channel scales
    spanning 50x, per-channel steps track each channel and the error falls by a large factor."""
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(0)) * torch.logspace(-1, 0.7, 16)[:, None]

    def mse(gran):
        lo, hi = obs.minmax_range(to_blocks(x, gran))
        step, zero = choose_qparams(lo, hi, 4, False)
        return float((fake_quantize_blocked(x, step, zero, 4, False, gran) - x).pow(2).mean())

    per_tensor, per_channel = mse(Granularity("tensor")), mse(Granularity("channel", 0))
    assert per_channel < 0.5 * per_tensor


def test_group_size_must_divide():
    with pytest.raises(ConfigError, match="does not divide"):
        to_blocks(torch.randn(4, 10), Granularity("group", 0, 4))


def test_mse_search_has_40_candidates_and_beats_minmax_with_outliers():
    assert len(obs.MSE_SHRINK) == 40 and obs.MSE_SHRINK[-1] == pytest.approx(0.22)
    x = torch.randn(1, 10000)
    x[0, :3] = 40.0
    lo, hi = obs.mse_range(x, 4, False)
    assert hi < 40.0
    err_mse = obs.lp_error(x, lo, hi, 4, False, 2.0)
    err_mm = obs.lp_error(x, *obs.minmax_range(x), 4, False, 2.0)
    assert err_mse < err_mm


def test_row_quantile_matches_sorted_rank_and_handles_large_inputs():
    x = torch.randn(3, 1001)
    q = obs.row_quantile(x, 0.9)
    ref = x.sort(dim=1).values[:, math.ceil(0.9 * 1001) - 1 : math.ceil(0.9 * 1001)]
    assert torch.equal(q, ref)
    big = torch.rand(1, (1 << 24) + 8)  # torch.quantile refuses this size
    assert 0.98 < float(obs.row_quantile(big, 0.99)) < 1.0


def test_running_observers_accumulate():
    mm = obs.Observer("minmax", 4, False)
    ema = obs.Observer("ema", 4, False, momentum=0.5)
    for v in (1.0, 3.0):
        batch = torch.tensor([[-v, v]])
        mm.update(batch)
        ema.update(batch)
    assert mm.range()[1].item() == 3.0
    assert ema.range()[1].item() == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="saw no data"):
        obs.Observer("mse", 4, False).range()


def test_lsq_step_gradient_matches_formula():
    torch.manual_seed(0)
    x = torch.randn(200) * 2
    q = UniformQuantizer(3, symmetric=False)
    q.set_range(torch.tensor(-1.5), torch.tensor(1.0))
    q.learn_step(True)
    out = q(x)
    out.sum().backward()
    s, z = q.step.detach().item(), q.zero.item()
    v = x / s
    # LSQ (Esser et al. eq. 3) with a zero point: qmin - z below, qmax - z above, round(v) - v inside
    per = torch.where(v + z <= 0, -z, torch.where(v + z >= 7, 7 - z, torch.round(v) - v))
    g = lsq_grad_scale(200, 7)
    assert g == pytest.approx(1 / math.sqrt(200 * 7))
    assert q.step.grad.item() == pytest.approx(g * per.sum().item(), rel=1e-4)
    xg = x.clone().requires_grad_(True)
    q(xg).sum().backward()
    inside = (x / s + z > 0) & (x / s + z < 7)
    assert torch.equal(xg.grad, inside.float())


def _adaround_setup(bits=4):
    torch.manual_seed(1)
    w = torch.randn(6, 10)
    q = UniformQuantizer(bits, granularity=Granularity("channel", 0))
    q.set_range(*obs.minmax_range(to_blocks(w, q.granularity)))
    return w, q


def test_adaround_init_soft_equals_weight_and_hard_equals_nearest_rounding():
    w, q = _adaround_setup()
    ada = AdaRound(w, q)
    # h(V) = fractional part, so the soft weight reproduces W inside the grid (the zero point's
    # rounding can push a channel's extreme up to half a step outside it)
    v = to_blocks(w, q.granularity) / q.step + q.zero
    inside = ((v >= 0) & (v <= 15)).reshape_as(w)
    assert inside.float().mean() > 0.8
    assert torch.allclose(ada(w, q)[inside], w[inside], atol=1e-5)
    ada.harden()
    assert torch.allclose(ada(w, q), q(w), atol=1e-6)  # q(w) = nearest rounding


def test_adaround_regulariser_and_beta_schedule():
    w, q = _adaround_setup()
    ada = AdaRound(w, q)
    assert ada.regularizer(2.0) > 0
    with torch.no_grad():
        ada.alpha.copy_(torch.sign(ada.alpha) * 50)
    assert ada.regularizer(2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert anneal_beta(0, 100) is None and anneal_beta(19, 100) is None
    assert anneal_beta(20, 100) == pytest.approx(20.0)
    assert anneal_beta(100, 100) == pytest.approx(2.0)


def test_qdrop_mixing_keeps_fraction_p_quantized():
    q = UniformQuantizer(2)
    q.set_range(torch.tensor(-1.0), torch.tensor(1.0))
    x = torch.rand(20000) * 2 - 1
    xq = q(x)
    q.drop_prob = 0.5
    torch.manual_seed(0)
    mixed = q(x)
    from_q = (mixed == xq) & (xq != x)
    from_fp = (mixed == x) & (xq != x)
    assert (from_q | from_fp)[xq != x].all()
    assert 0.45 < from_q.float().sum() / (xq != x).float().sum() < 0.55


def test_log2_quantizer_codes_and_shift_form_equal():
    x = torch.softmax(torch.randn(4, 16, 16) * 3, -1)
    for tau in (1, 2, 4):
        xq = log2_fake_quant(x, 1.0, tau, 4)
        q = torch.round(-tau * torch.log2(x))
        assert torch.equal(xq == 0, q > 15)
        kept = q <= 15
        assert torch.allclose(xq[kept], 2.0 ** (-q[kept] / tau))
    assert torch.allclose(shift_dequant(x, 0.8, 4), log2_fake_quant(x, 0.8, 2, 4), rtol=1e-6, atol=0)


def test_golden_section_and_log2_calibration_picks_a_base():
    assert golden_section(lambda s: (s - 0.3) ** 2, 0.0, 1.0) == pytest.approx(0.3, abs=1e-4)
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(2, 2, 8, 8) * 2, -1)
    v = torch.randn(2, 2, 8, 4)
    q = Log2Quantizer(3)
    q.start_observing()
    q.observe(a, v)
    q.finish_observing()
    assert q.calibrated and q.tau in (1, 2, 4)
    errs = {t: q.error(float(q.scale), t) for t in (1, 2, 4)}
    assert errs[q.tau] <= min(errs.values()) + 1e-9


def test_timestep_quantizer_batched_equals_sequential_and_grads_stay_per_step():
    torch.manual_seed(0)
    tq = TimestepQuantizer(4, num_steps=5)
    t = torch.tensor([0, 3, 3, 1, 4, 2])
    x = torch.randn(6, 3, 4) * (t.float() + 1).reshape(-1, 1, 1)
    tq.start_observing()
    tq(x, t)
    tq.finish_observing()
    batched = tq(x, t)
    seq = torch.cat([tq(x[i : i + 1], t[i : i + 1]) for i in range(6)])
    assert torch.equal(batched, seq)
    assert len(torch.unique(tq.step)) == 5
    tq.step.requires_grad_(True)
    tq(x[t == 3], t[t == 3]).pow(2).sum().backward()
    assert (tq.step.grad[[0, 1, 2, 4]] == 0).all() and tq.step.grad[3] != 0
    with pytest.raises(ConfigError, match="timestep indices"):
        tq(x, torch.tensor([0, 9, 0, 0, 0, 0]))
