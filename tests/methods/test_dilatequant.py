"""DilateQuant: weight dilation maths and float equivalence, the temporal parallel quantizer, BKD."""
from __future__ import annotations

import copy

import pytest
import torch
from tiny_diffusion import tiny_unet

from methods.dilatequant import (
    DilatedInput,
    DilateQuantConfig,
    dilate_,
    dilation_scales,
    saturated_channels,
    wd_sites,
)
from methods.errors import ConfigError
from methods.quant import QuantConfig, quant_disabled, quantize_
from methods.quant.modules import QuantLinear


def _attention(dim: int = 8, heads: int = 2):
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    return Attention(query_dim=dim, heads=heads, dim_head=dim // heads, norm_num_groups=2,
                     residual_connection=True, bias=True, upcast_softmax=True,
                     _from_deprecated_attn_block=True).eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


# ------------------------------------------------------------------------------------ WD formula
def test_dilation_scales_match_the_papers_formula_by_hand():
    # row 0: max 1.0 at k0, min -0.2 at k2; row 1: max 0.4 at k2, min -1.0 at k0 -> A = {0, 2}
    w = torch.tensor([[1.0, 0.5, -0.2], [-1.0, 0.25, 0.4]])
    assert saturated_channels(w).tolist() == [True, False, True]
    s = dilation_scales(w)
    # k1: s_k1 = min(1.0 / 0.5, 0.4 / 0.25) = 1.6, no negative entry -> s_k2 = inf
    assert torch.allclose(s, torch.tensor([1.0, 1.6, 1.0]), rtol=1e-5)
    # negative side: k1 = [-0.1, -0.5] -> s_k2 = min(-0.2 / -0.1, -1.0 / -0.5) = 2
    w2 = torch.tensor([[1.0, -0.1, -0.2], [-1.0, -0.5, 0.4]])
    assert torch.allclose(dilation_scales(w2), torch.tensor([1.0, 2.0, 1.0]), rtol=1e-5)
    assert torch.allclose(dilation_scales(w, max_scale=1.25), torch.tensor([1.0, 1.25, 1.0]))


def test_dilation_is_the_largest_scale_that_keeps_every_output_range():
    torch.manual_seed(1)
    w = torch.randn(6, 10, 3, 3)
    s = dilation_scales(w)
    assert (s >= 1).all() and (s > 1).any()
    d = w * s.reshape(1, -1, 1, 1)
    assert torch.equal(w.flatten(1).amax(1), d.flatten(1).amax(1))
    assert torch.equal(w.flatten(1).amin(1), d.flatten(1).amin(1))
    # 0.1 % more on any dilated channel pushes some output channel past its range
    for k in torch.nonzero(s > 1).flatten().tolist():
        more = s.clone()
        more[k] *= 1.001
        e = w * more.reshape(1, -1, 1, 1)
        grew = (e.flatten(1).amax(1) > w.flatten(1).amax(1)) | (e.flatten(1).amin(1) < w.flatten(1).amin(1))
        assert grew.any()


def test_weight_step_is_unchanged_and_activation_range_shrinks():
    attn = _attention()
    with torch.no_grad():  # channel 3 carries the largest activations and only small weights
        attn.group_norm.weight[3] = 8.0
        for lin in (attn.to_q, attn.to_k, attn.to_v):
            lin.weight[:, 3] *= 0.05
    x = torch.randn(4, 8, 3, 3)
    seen = {}
    hook = lambda m, a: seen.__setitem__("x", a[0].detach())  # noqa: E731
    ref = attn(x)
    h = attn.to_q.register_forward_pre_hook(hook)
    attn(x)
    before = seen["x"].abs().amax()
    cfg = QuantConfig(w_bits=4, a_bits=4, w_observer="minmax", quant_matmul=False, first_last_bits=None)
    steps_before = _w_steps(attn, cfg)
    s_out = dilation_scales(attn.to_out[0].weight)  # folded into to_v's rows
    rows = dilate_(attn)
    out = attn(x)
    after = seen["x"].abs().amax()
    h.remove()
    assert _rel(out, ref) < 1e-5
    assert after < 0.5 * before  # the max channel was unsaturated, so it shrank
    assert any(r["unsaturated"] > 0 for r in rows)
    q, k, v, o = _w_steps(attn, cfg)
    for a, b in zip(steps_before, (q, k, None, o), strict=True):
        if b is not None:  # dilated columns: every output channel's range, hence its step, unchanged
            assert torch.allclose(a, b, rtol=1e-6)
    # to_v's rows carry the to_out fold: its per-row step scales by exactly 1/s (relative error unchanged)
    assert torch.allclose(v, steps_before[2] / s_out.reshape(-1, 1), rtol=1e-5)


def _w_steps(attn, cfg):
    out = []
    for lin in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]):
        q = QuantLinear(copy.deepcopy(lin), 4, 4, cfg)
        q.calibrate_weight()
        out.append(q.w_quant.step.detach().clone())
    return out


# ------------------------------------------------------------------------------------ equivalence
def test_wd_keeps_the_unet_output_in_float():
    unet = tiny_unet()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([10, 500, 900])
    with torch.no_grad():
        ref = unet(x, t).sample
        dil = copy.deepcopy(unet)
        rows = dilate_(dil, "foldable")
        out = dil(x, t).sample
    assert {r["fold"] for r in rows} == {"norm", "rows"}
    assert _rel(out, ref) < 1e-5
    changed = [n for n, p in dil.named_parameters() if not torch.equal(p, dict(unet.named_parameters())[n])]
    assert changed and all("attentions" in n for n in changed)  # foldable WD touches attention only


def test_wd_scope_all_is_equivalent_with_quantizers_off():
    unet = tiny_unet()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([20, 700])
    q = quantize_(copy.deepcopy(unet), QuantConfig(quant_matmul=False))
    rows = dilate_(q, "all")
    assert any(r["fold"] == "explicit" for r in rows)
    assert any(isinstance(m, DilatedInput) for m in q.modules())
    with torch.no_grad(), quant_disabled(q):
        out = q(x, t).sample
        ref = unet(x, t).sample
    assert _rel(out, ref) < 1e-5


def test_scope_all_on_a_float_model_says_quantize_first():
    with pytest.raises(ConfigError, match="quantize_"):
        dilate_(tiny_unet(), "all")


def test_no_unsaturated_channel_is_a_clear_error():
    attn = _attention(dim=2, heads=1)
    pattern = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    with torch.no_grad():
        for lin in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]):
            lin.weight.copy_(pattern)
    with pytest.raises(ConfigError, match="no unsaturated input channel"):
        dilate_(attn)
    with pytest.raises(ConfigError, match="nothing to dilate"):
        dilate_(torch.nn.Sequential(torch.nn.Linear(3, 3)))  # no WD site at all


def test_sites_of_the_tiny_unet():
    sites = wd_sites(tiny_unet())
    kinds = {s.fold for s in sites}
    assert kinds == {"norm", "rows"}
    assert all(len(s.consumers) == 3 for s in sites if s.fold == "norm")
    with pytest.raises(ConfigError, match="scope"):
        wd_sites(tiny_unet(), "everything")


# ------------------------------------------------------------------------------------ TPQ
def _observed_tpq(heads: int = 1, steps: int = 4):
    from methods.quant.quantizers import TimestepQuantizer

    torch.manual_seed(2)
    q = TimestepQuantizer(4, steps, heads=heads, head_dim=1)
    q.start_observing()
    for k in range(steps):  # step k's activations are (k + 1) times wider
        q(torch.randn(8, heads, 5, 3) * (k + 1), torch.full((8,), k))
    q.finish_observing()
    return q


@pytest.mark.parametrize("heads", [1, 2])
def test_tpq_mixed_batch_equals_each_sample_on_its_own(heads):
    q = _observed_tpq(heads)
    x, t = torch.randn(6, heads, 5, 3) * 2, torch.tensor([3, 0, 1, 3, 2, 0])
    batched = q(x, t)
    alone = torch.cat([q(x[i : i + 1], t[i : i + 1]) for i in range(6)])
    assert torch.equal(batched, alone)
    # and each sample really uses its own entry: quantizing sample 0 with step 0's entry differs
    assert not torch.equal(q(x[:1], torch.tensor([0])), batched[:1])


def test_tpq_trains_every_entry_of_a_mixed_batch_and_only_those():
    q = _observed_tpq(heads=2, steps=5)
    params = q.learn(step=True, zero=True)
    assert len(params) == 2 and q.zero_offset.shape == (5, 2)
    x, t = torch.randn(8, 2, 5, 3) * 6, torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])  # step 4 absent
    ((q(x, t) - x) ** 2).sum().backward()
    g = q.step.grad
    assert (g[:4] != 0).all()  # every (step, head) entry in the batch got a gradient at once
    assert (g[4] == 0).all()  # the step not in the batch got none
    assert (q.zero_offset.grad[:4] != 0).any() and (q.zero_offset.grad[4] == 0).all()
    with torch.no_grad():
        q.zero_offset.add_(0.4)
    q.harden_zero()
    assert q.zero_offset is None and torch.equal(q.zero, q.zero.round())


def test_tpq_per_head_entries_follow_each_heads_range():
    from methods.quant.quantizers import TimestepQuantizer

    q = TimestepQuantizer(8, 2, heads=2, head_dim=1)
    q.start_observing()
    x = torch.stack([torch.linspace(-1, 1, 10), torch.linspace(-4, 4, 10)])[None].expand(3, 2, 10)
    q(x, torch.tensor([1, 1, 1]))
    q.finish_observing()
    assert float(q.step[1, 1]) == pytest.approx(4 * float(q.step[1, 0]), rel=1e-5)
    with pytest.raises(ConfigError, match="heads"):
        q(torch.randn(3, 3, 10), torch.tensor([0, 0, 0]))


# ------------------------------------------------------------------------------------ BKD pipeline
def _calib(unet, steps=4, size=16):
    from tiny_diffusion import tiny_scheduler

    from methods.dilatequant import DilateQuantConfig, calibration_data

    cfg = DilateQuantConfig(calib_size=size, trajectories=4, batch_size=8)
    return calibration_data(unet, tiny_scheduler(), steps, cfg), cfg


def test_bkd_lowers_the_block_error_against_the_fp_chain():
    from methods.dilatequant import bkd_param_groups, temporal_qmodel
    from methods.quant.unet_units import StepIndex, UNetState, calibrate_temporal, distill, run_units

    unet = tiny_unet()
    calib, cfg = _calib(unet)
    index = StepIndex()
    q = temporal_qmodel(unet, DilateQuantConfig(bits="w4a4").quant_config(), 4, index, True)
    calibrate_temporal(q, calib, index)
    names = ["embed", "down.0"]

    def error() -> float:
        index.set(calib.idx)
        with torch.no_grad():
            a = run_units(q, names, UNetState(calib.x, calib.t))
            b = run_units(unet, names, UNetState(calib.x, calib.t))
        return float((a.h - b.h).pow(2).mean())

    before = error()
    rows = distill(q, unet, calib, [names], bkd_param_groups(1e-3, 1e-3, True), iters=120, batch_size=8,
                   index=index)
    assert rows[0]["trained"] > 0
    assert error() < 0.8 * before


def test_prepare_dilatequant_end_to_end_is_evaluation_ready():
    from tiny_diffusion import tiny_scheduler

    from methods.dilatequant import prepare_dilatequant
    from methods.quant.unet_units import TemporalActQuant

    unet = tiny_unet()
    calib, _ = _calib(unet)
    cfg = DilateQuantConfig(bits="w4a4", iters=2, batch_size=8, calib_size=16, trajectories=4)
    sampler = prepare_dilatequant(unet, tiny_scheduler(), 4, cfg, calib)
    rep = sampler.report
    assert len(rep["units"]) == 7 and rep["wd_sites"] > 0 and rep["quantize_seconds"] > 0
    tpq = [m for m in sampler.unet.modules() if isinstance(m, TemporalActQuant)]
    assert tpq and all(torch.equal(m.tq.zero, m.tq.zero.round()) and m.tq.zero_offset is None for m in tpq)
    x = sampler.sample(torch.randn(2, 1, 8, 8))
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()
    assert all(not p.requires_grad for p in sampler.unet.parameters())


def test_dilatequant_bad_input_is_refused_with_what_to_do():
    from tiny_diffusion import tiny_cond_unet, tiny_scheduler

    from methods.dilatequant import dilatequant_method
    from methods.quant.bits import BitsError

    with pytest.raises(BitsError, match="DilateQuant"):
        DilateQuantConfig(bits="fp")
    with pytest.raises(BitsError, match="outside 2..8"):
        DilateQuantConfig(bits="w16a16")
    with pytest.raises(ConfigError, match="smaller than the batch"):
        DilateQuantConfig(calib_size=16, batch_size=32)
    with pytest.raises(ConfigError, match="max_scale"):
        DilateQuantConfig(max_scale=0.5)
    with pytest.raises(ConfigError, match="UNet2DModel"):
        dilatequant_method(tiny_cond_unet(), tiny_scheduler(), 4, DilateQuantConfig(calib_size=32))
    with pytest.raises(ConfigError, match="conditioning"):
        dilatequant_method(tiny_unet(), tiny_scheduler(), 4, cond={"class_labels": torch.zeros(1)})


def test_dilatequant_as_a_diffusion_method_entry():
    from tiny_diffusion import tiny_scheduler

    from methods.diffusion import DiffusionMethod, DiffusionSampler
    from methods.dilatequant import dilatequant_method

    entry = DiffusionMethod("dilatequant", DilateQuantConfig, dilatequant_method, "WD + TPQ + BKD")
    prepare = entry.create(bits="W4A4", iters=1, batch_size=4, calib_size=8, trajectories=2, bkd=False)
    with pytest.raises(ConfigError, match="Unknown"):
        entry.create(bitz="w4a4")
    sampler = prepare(tiny_unet(), tiny_scheduler(), 4)
    assert isinstance(sampler, DiffusionSampler)
    assert sampler.sample(torch.randn(1, 1, 8, 8)).shape == (1, 1, 8, 8)


# ------------------------------------------------------------------------------------ baselines
def test_lora_starts_at_the_fp_weight_and_merges_into_one_weight():
    from methods.efficientdm import add_lora, merge_lora

    q = quantize_(copy.deepcopy(tiny_unet()), QuantConfig(quant_matmul=False))
    w0 = q.conv_in.weight.detach().clone()
    adapters = add_lora(q, rank=2)
    assert adapters and torch.equal(q.conv_in.weight, w0)  # B = 0
    with torch.no_grad():
        adapters[0].B.fill_(0.1)
    moved = q.conv_in.weight.detach().clone()
    assert not torch.equal(moved, w0)
    assert merge_lora(q) == len(adapters)
    assert torch.equal(q.conv_in.weight, moved) and isinstance(q.conv_in.weight, torch.nn.Parameter)


@pytest.mark.parametrize("which", ["efficientdm", "qat"])
def test_baselines_run_end_to_end_and_refuse_bad_bits(which):
    from tiny_diffusion import tiny_scheduler

    from methods.diffusion_qat import DiffusionQATConfig, prepare_qat
    from methods.efficientdm import EfficientDMConfig, prepare_efficientdm
    from methods.quant.bits import BitsError

    cls, prepare = {"efficientdm": (EfficientDMConfig, prepare_efficientdm),
                    "qat": (DiffusionQATConfig, prepare_qat)}[which]
    with pytest.raises(BitsError):
        cls(bits="w16a4")
    with pytest.raises(ConfigError, match="smaller than the batch"):
        cls(calib_size=4, batch_size=8)
    unet = tiny_unet()
    calib, _ = _calib(unet)
    cfg = cls(bits="w4a4", iters=3, batch_size=8, calib_size=16, trajectories=4)
    sampler = prepare(unet, tiny_scheduler(), 4, cfg, calib)
    assert sampler.report["optimizer_steps"] == 3 and len(sampler.report["units"]) == 1
    assert torch.isfinite(sampler.sample(torch.randn(2, 1, 8, 8))).all()


# ----------------------------------------------------------------------------- composed with CacheQuant
def _cq_inputs():
    from tiny_diffusion import tiny_scheduler

    g = torch.Generator().manual_seed(3)
    cal, noise = torch.randn(4, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    return tiny_unet(), tiny_scheduler(), cal, noise


def test_cachequant_default_quantizer_rows_are_unchanged_regression():
    """Samples of the default quantizer equal those measured at a5cddc6, before `quantizer` existed."""
    from methods.cachequant import CacheQuantConfig, prepare_cachequant

    unet, sched, cal, noise = _cq_inputs()
    golden = [(dict(interval=2, schedule="dps", bits="w4a8"), -2.6481086760759354, 0.766195229603909, [0, 1]),
              (dict(interval=1, schedule="uniform", bits="w8a8", cache_dec=False, quant_dec=False),
               -1.123581636697054, 0.7730178007817207, [0, 1, 2, 3])]
    for kw, total, mean_abs, refresh in golden:
        cfg = CacheQuantConfig(**kw, calib_samples=4, dps_samples=4)
        assert cfg.quantizer == "qdiffusion"
        sampler = prepare_cachequant(unet, sched, 4, cfg, cal)
        x = sampler.sample(noise).double()
        assert sampler.refresh == refresh and "dq_quantize_seconds" not in sampler.report
        assert float(x.sum()) == pytest.approx(total, rel=1e-6, abs=1e-6)
        assert float(x.abs().mean()) == pytest.approx(mean_abs, rel=1e-6)


def test_cachequant_with_the_dilatequant_quantizer_runs_and_differs():
    from methods.cachequant import CacheQuantConfig, CorrectedLayer, prepare_cachequant
    from methods.quant.unet_units import StepIndex, TemporalActQuant

    unet, sched, cal, noise = _cq_inputs()
    common = dict(schedule="dps", bits="w4a4", calib_samples=4, dps_samples=4)
    memo: dict = {}
    dq = prepare_cachequant(unet, sched, 4, CacheQuantConfig(interval=2, **common, quantizer="dilatequant",
                                                             dq_iters=2, dq_calib=16), cal, memo=memo)
    ptq = prepare_cachequant(unet, sched, 4, CacheQuantConfig(interval=2, **common), cal)
    assert isinstance(dq.clock, StepIndex) and dq.refresh == ptq.refresh == [0, 1]
    assert any(isinstance(m, TemporalActQuant) for m in dq.dc.unet.modules())
    assert any(isinstance(m, CorrectedLayer) for m in dq.dc.unet.modules())  # quantization DEC on top
    seen = []
    hook = dq.dc.unet.conv_in.register_forward_pre_hook(lambda m, a: seen.append(dq.clock.i))
    x_dq, x_ptq = dq.sample(noise), ptq.sample(noise)
    hook.remove()
    assert seen == [0, 1, 2, 3]  # the per-step quantizers follow the sampler's step, refreshed or not
    assert not torch.allclose(x_dq, x_ptq) and torch.isfinite(x_dq).all()
    assert dq.report["dq_calib_size"] == 16 and dq.report["dq_quantize_seconds"] > 0
    # trained once: another schedule reuses it, and the memoised model was not wrapped by DEC
    other = prepare_cachequant(unet, sched, 4, CacheQuantConfig(interval=3, **common, quantizer="dilatequant",
                                                                dq_iters=2, dq_calib=16), cal, memo=memo)
    assert other.report["dq_quantize_seconds"] == dq.report["dq_quantize_seconds"]
    (stored, _, _), = [v for k, v in memo.items() if k[0] == "dilatequant"]
    assert not any(isinstance(m, CorrectedLayer) for m in stored.modules())


def test_cachequant_quantizer_bad_input():
    from methods.cachequant import CacheQuantConfig

    with pytest.raises(ConfigError, match="quantizer must be one of"):
        CacheQuantConfig(quantizer="dilatequnt")
    with pytest.raises(ConfigError, match="nothing to quantize"):
        CacheQuantConfig(bits="fp", schedule="dps", quantizer="dilatequant")
    with pytest.raises(ConfigError, match="w2..8"):
        CacheQuantConfig(bits="w16a16", quantizer="dilatequant")
