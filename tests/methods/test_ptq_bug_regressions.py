"""Regression tests for the deliberate bugs of issue 13 that the suite used to let through.

Each test is named after the bug it pins and fails when that bug is put back (checked by hand when
the test was written: the bug each test was run against is in its docstring):

1. BRECQ's activation stage removed;        2. MGRQ's RepQ-ViT initialisation removed;
3. QDrop's input mixing removed (and the    4. the LSQ learning rate set to 0;
   double mixing of the unit input);        5. the PCR term multiplied by 0;
6. PCR's perturbed inputs replaced by clean ones (and PCR's two passes on different inputs/masks).
Plus QDrop's calibration with every fake-quant off, MGRQ's observers, and both local-supervision
readings.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from methods.ptq import PTQ_METHODS
from methods.ptq.brecq import BRECQConfig
from methods.ptq.mgrq import MGRQConfig
from methods.ptq.qdrop import QDropConfig
from methods.quant import (
    QuantConfig,
    calibrate,
    iter_quantizers,
    quant_disabled,
    quantize_,
    set_quant_state,
)
from methods.quant.recon import ReconConfig, ReconEngine, lp_loss
from methods.ttaq import TTAQConfig, TTAQReconLoss
from tests.methods.test_quant_wrap import tiny_cnn, tiny_vit

FWD = lambda m, xb: m(xb)  # noqa: E731
X = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5)).eval()


XV = torch.randn(64, 6, generator=torch.Generator().manual_seed(5))


def act_steps(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: q.step.detach().clone() for n, q in iter_quantizers(model, "act") if hasattr(q, "step")}


# ------------------------------------------------------------------------------ 3. QDrop mixing
def test_qdrop_unit_input_each_element_is_quantized_model_input_quantized_or_fp_input():
    """Bug: the unit input mixed by the engine and then mixed again by the first layer's own quantizer
    (Q(x_q), x_q, Q(x_fp), x_fp ~25 % each); also fails when the mixing is removed (no x_fp)."""
    model = calibrate(quantize_(mlp(), QuantConfig(w_bits=8, a_bits=2, first_last_bits=None)), XV)
    layer = model[2]
    with torch.no_grad():
        q_in = model[1](model[0](XV))  # the quantized model's input to the unit ("2",)
        with quant_disabled(model):
            fp_in = model[1](model[0](XV))
        q_of_q_in = layer.a_quant(q_in)  # drop_prob is 1 here: plain fake-quant
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    # recorded only while the unit is being reconstructed (the engine's FP capture runs it too)
    hook = layer.a_quant.register_forward_hook(
        lambda m, _a, out: seen.append((out.detach(),)) if m.drop_prob < 1 else None
    )
    indices = []

    def loss_fn(q_out, fp_out, ctx):
        indices.append(ctx.index.clone())
        return lp_loss(q_out, fp_out)

    cfg = ReconConfig(iters=20, batch_size=32, drop_prob=0.5, learn_acts=False)
    try:
        ReconEngine(model, XV, cfg, seed=1).reconstruct([("2",)], loss_fn)
    finally:
        hook.remove()
    assert len(seen) == len(indices) == 20
    from_fp, from_q = [], []
    for (out,), idx in zip(seen, indices, strict=True):
        is_qq = out == q_of_q_in[idx]
        is_fp = out == fp_in[idx]
        distinct = (q_of_q_in[idx] != fp_in[idx]) & (q_in[idx] != q_of_q_in[idx])
        assert bool((is_qq | is_fp).all()), "an element is neither Q(x_q) nor x_fp"
        from_fp.append(is_fp[distinct & ~is_qq].float())
        from_q.append(is_qq[distinct & ~is_fp].float())
    share_fp = torch.cat(from_fp).numel() / (torch.cat(from_fp).numel() + torch.cat(from_q).numel())
    assert 0.4 < share_fp < 0.6  # p = 0.5


def test_qdrop_calibrates_activation_ranges_with_every_fake_quant_off(monkeypatch):
    """Bug: activation ranges observed with weight quantization on (QDrop's code observes with both off)."""
    fp_model = mlp()
    off = calibrate(quantize_(copy.deepcopy(fp_model), QuantConfig(w_bits=2, a_bits=4)), XV,
                    weights_quantized=False)
    on = calibrate(quantize_(copy.deepcopy(fp_model), QuantConfig(w_bits=2, a_bits=4)), XV)
    # the second layer's input range differs once the first layer's 2-bit weights are on
    assert not torch.equal(act_steps(off)["2.a_quant"], act_steps(on)["2.a_quant"])
    # and with weights off it is the FP model's own range
    probe = quantize_(copy.deepcopy(fp_model), QuantConfig(w_bits=2, a_bits=4))
    set_quant_state(probe, weight=False, act=False)
    calibrate(probe, XV, weights_quantized=False)
    torch.testing.assert_close(act_steps(off)["2.a_quant"], act_steps(probe)["2.a_quant"])
    flags = []
    import methods.ptq.qdrop as qdrop

    real = qdrop.calibrate
    monkeypatch.setattr(qdrop, "calibrate", lambda *a, **k: flags.append(a[4]) or real(*a, **k))
    PTQ_METHODS.create("qdrop", iters=1, w_bits=4, a_bits=4)(tiny_cnn(), X)
    assert flags == [False] and QDropConfig().calib_weights_quantized is False
    assert BRECQConfig().calib_weights_quantized is True  # BRECQ's own order [code]


# ------------------------------------------------------------------------------ 1. BRECQ
def test_brecq_runs_its_activation_stage_after_the_weight_stage():
    """Bug: BRECQ's second (activation-step) stage removed: steps stay at their calibrated values."""
    cfg = dict(w_bits=2, a_bits=4, iters=15, batch_size=16)
    config = BRECQConfig(**cfg)
    init = quantize_(tiny_cnn(), config.quant_config(a_p=config.a_p))
    calibrate(init, X, config.calib_batch, FWD)
    result = PTQ_METHODS.get("brecq").run(tiny_cnn(), X, config, seed=0)
    before, after = act_steps(init), act_steps(result.model)
    moved = [n for n in before if not torch.allclose(before[n], after[n], rtol=1e-6, atol=0)]
    assert len(moved) >= len(before) - 1  # every unit's input quantizer learned its step
    stages = [r["n_act_steps"] for r in result.report["recon"]]
    assert stages[: len(stages) // 2] == [0] * (len(stages) // 2) and all(stages[len(stages) // 2:])


# ------------------------------------------------------------------------------ 4. LSQ
def test_lsq_steps_move_with_the_default_rate_and_a_larger_rate_lowers_the_unit_loss():
    """Bug: the LSQ learning rate set to 0 (in the optimiser or the defaults)."""
    base = calibrate(quantize_(tiny_cnn(), QuantConfig(w_bits=8, a_bits=2, first_last_bits=None)), X)
    unit = ("3", "4", "5")

    def unit_loss(model) -> float:
        """The quantized unit on the quantized model's input against the FP unit on the FP input."""
        with torch.no_grad():
            q_out = model[5](model[4](model[3](model[2](model[1](model[0](X))))))
            with quant_disabled(model):
                fp_out = model[5](model[4](model[3](model[2](model[1](model[0](X))))))
        return float(lp_loss(q_out, fp_out))

    default = copy.deepcopy(base)
    ReconEngine(default, X, ReconConfig(iters=10, learn_weights=False)).reconstruct([unit])
    assert not torch.equal(act_steps(default)["3.a_quant"], act_steps(base)["3.a_quant"])
    fast = copy.deepcopy(base)
    ReconEngine(fast, X, ReconConfig(iters=60, learn_weights=False, act_lr=1e-2)).reconstruct([unit])
    assert unit_loss(fast) < 0.9 * unit_loss(base)


# ------------------------------------------------------------------------------ 5./6. PCR
def _pcr_run(cfg: TTAQConfig, x_pert: torch.Tensor | None = None, disable_quant: bool = False):
    model = calibrate(quantize_(tiny_cnn(), cfg.quant_config()), X)
    if disable_quant:
        set_quant_state(model, weight=False, act=False)
    loss = TTAQReconLoss(model, X, cfg, 0, FWD, ("7",))
    if x_pert is not None:
        loss.x_pert = x_pert
    terms = []

    def spy(q_out, fp_out, ctx):
        value = loss(q_out, fp_out, ctx)
        terms.append(dict(loss.last_terms))
        return value

    spy.start_unit = loss.start_unit
    torch.manual_seed(0)
    ReconEngine(model, X, cfg.recon_config(), seed=0).reconstruct([("3", "4", "5")], spy)
    return terms


def test_pcr_is_exactly_zero_for_an_identity_perturbation_with_quantization_and_drop_on():
    """Bug: the clean pass had the QDrop-mixed input and its own drop masks, the perturbed pass the
    unmixed input and fresh masks, so PCR penalised QDrop's noise (non-zero at x~ = x)."""
    cfg = TTAQConfig(w_bits=2, a_bits=2, pem=False, pcr=True, iters=4, batch_size=16, drop_prob=0.5)
    terms = _pcr_run(cfg, x_pert=X.clone())
    assert [t["pcr"] for t in terms] == [0.0] * 4


def test_pcr_sees_the_perturbed_inputs_and_enters_the_loss_with_lambda_c():
    """Bugs: PCR's perturbed inputs replaced by clean ones (PCR 0); the PCR term multiplied by 0."""
    cfg = TTAQConfig(w_bits=2, a_bits=2, pem=False, pcr=True, iters=3, batch_size=16, lambda_c=0.5)
    terms = _pcr_run(cfg)
    assert all(t["pcr"] > 1e-4 for t in terms)
    for t in terms:
        assert t["total"] == pytest.approx(t["rec"] + 0.5 * t["pcr"], rel=1e-5)
        assert t["total"] > t["rec"]


def test_pcr_fp_perturbed_reading_is_zero_at_the_fp_solution():
    cfg = TTAQConfig(w_bits=2, a_bits=2, pem=False, pcr=True, iters=2, batch_size=16,
                     pcr_target="fp_perturbed")
    model = calibrate(quantize_(tiny_cnn(), cfg.quant_config()), X)
    set_quant_state(model, weight=False, act=False)  # the FP solution: B^ = B
    loss = TTAQReconLoss(model, X, cfg, 0, FWD, ("7",))
    loss.start_unit(("3", "4", "5"))
    from methods.quant.recon import ReconContext

    idx = torch.arange(16)
    mask = torch.rand(loss.q_in_pert[idx].shape, generator=torch.Generator().manual_seed(0)) < 0.5
    ctx = ReconContext(0, 1, ("3", "4", "5"), idx, model, X[idx], None, loss.q_in_pert[idx],
                       input_mask=mask, fp_unit_input=loss.fp_in_pert[idx], rng_state=torch.get_rng_state())
    q_out = ctx.forward_same_masks(loss.q_in_pert[idx], loss.fp_in_pert[idx])
    loss(q_out, q_out.detach(), ctx)
    assert loss.last_terms["pcr"] == 0.0


# ------------------------------------------------------------------------------ 2. MGRQ
def test_mgrq_starts_from_repq_vit_and_plain_init_does_not():
    """Bug: MGRQ's RepQ-ViT initialisation removed (LayerNorm affines never re-parameterised)."""
    fp = tiny_vit(fused=False)
    common = dict(w_bits=4, a_bits=4, iters=1, batch_size=8)
    repq = PTQ_METHODS.create("mgrq", **common)(fp, X).model
    plain = PTQ_METHODS.create("mgrq", init="plain", **common)(fp, X).model
    ln_fp, ln_repq, ln_plain = fp.blocks[0].norm1, repq.blocks[0].norm1, plain.blocks[0].norm1
    assert not torch.allclose(ln_repq.weight, ln_fp.weight)
    torch.testing.assert_close(ln_plain.weight, ln_fp.weight)
    assert repq.blocks[0].attn.av.qa.tau == 2  # RepQ-ViT's log-sqrt2 softmax quantizer


def test_mgrq_uses_the_baselines_weight_observer():
    """Bug (issue 13): MGRQ's config used min-max weight ranges where BRECQ/QDrop use MSE."""
    assert MGRQConfig().w_observer == BRECQConfig().w_observer == QDropConfig().w_observer == "mse"


@pytest.mark.parametrize("target", ["block_input", "fp_model"])
def test_mgrq_local_supervision_targets_follow_the_selected_reading(target):
    model = calibrate(quantize_(mlp(), QuantConfig(w_bits=2, a_bits=4, first_last_bits=None)), XV)
    layer = model[2]
    with torch.no_grad():
        q_in = model[1](model[0](XV))
        with quant_disabled(model):
            fp_in = model[1](model[0](XV))
    got = []

    def loss_fn(q_out, fp_out, ctx):
        got.append((ctx.layer_errors[0].detach(), ctx.index.clone(), q_out.detach()))
        return lp_loss(q_out, fp_out)

    loss_fn.needs_layer_errors = True
    loss_fn.layer_error_target = target
    cfg = ReconConfig(iters=1, batch_size=16, learn_acts=False)
    ReconEngine(model, XV, cfg).reconstruct([("2",)], loss_fn)
    err, idx, q_out = got[0]
    ref_in = q_in[idx] if target == "block_input" else fp_in[idx]
    expected = ((q_out - layer.fp_forward(ref_in)) ** 2).mean()
    torch.testing.assert_close(err, expected, rtol=1e-5, atol=1e-7)
    other = fp_in[idx] if target == "block_input" else q_in[idx]
    assert not torch.allclose(err, ((q_out - layer.fp_forward(other)) ** 2).mean())
