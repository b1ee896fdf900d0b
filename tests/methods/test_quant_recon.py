"""Reconstruction engine, RepQ-ViT re-parameterisation and MGRQ loss terms."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from methods.errors import ConfigError
from methods.ptq.mgrq import MGRQLoss, global_kl
from methods.ptq.repq_vit import (
    RepQViTConfig,
    channel_qparams,
    find_norm_linear_pairs,
    reparameterize,
    repq_init,
    set_per_channel,
)
from methods.quant import (
    QuantConfig,
    calibrate,
    check_ready_for_eval,
    finalize_for_eval,
    iter_quantizers,
    quant_disabled,
    quantize_,
)
from methods.quant.recon import ReconConfig, ReconEngine, default_units, lp_loss
from tests.methods.test_quant_wrap import tiny_cnn, tiny_vit

FWD = lambda m, xb: m(xb)  # noqa: E731
X = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def test_default_units_cover_blocks_and_layers_in_order():
    vit = quantize_(tiny_vit(), QuantConfig())
    assert default_units(vit, X, "block") == [("patch_embed.proj",), ("blocks.0",), ("blocks.1",), ("head",)]
    assert default_units(vit, X, "layer")[:3] == [
        ("patch_embed.proj",),
        ("blocks.0.attn.qkv",),
        ("blocks.0.attn.proj",),
    ]
    cnn = quantize_(tiny_cnn(), QuantConfig())
    units = default_units(cnn, X, "block")
    assert units[0] == ("0", "1", "2") and units[-1] == ("7",)


def test_engine_calls_callback_hardens_and_resets_drop_for_a_caller_stage():
    torch.manual_seed(0)
    model = calibrate(quantize_(tiny_vit(), QuantConfig(w_bits=2, a_bits=4, first_last_bits=None)), X)
    seen = []

    def loss_fn(q_out, fp_out, ctx):
        seen.append((ctx.iteration, ctx.unit, tuple(ctx.index.shape)))
        assert ctx.model_input.shape[0] == ctx.index.shape[0]
        return lp_loss(q_out, fp_out)

    cfg = ReconConfig(iters=60, batch_size=16, drop_prob=0.5, weight_lr=1e-2)
    stage = ("blocks.0", "blocks.1")  # a caller-defined stage of two blocks
    stats = ReconEngine(model, X, cfg, seed=0).reconstruct([stage], loss_fn)
    assert len(seen) == 60 and seen[0][1] == stage and seen[0][2] == (16,)
    # (soft AdaRound starts at W exactly, so the per-batch loss need not fall; the benefit over nearest
    # rounding is checked on the hardened model in the next test)
    assert torch.isfinite(torch.tensor([stats[0]["first_loss"], stats[0]["last_loss"]])).all()
    assert stats[0]["n_weight_layers"] == 8
    assert all(q.drop_prob == 1.0 for _, q in iter_quantizers(model))
    assert all(not q.step.requires_grad for _, q in iter_quantizers(model) if hasattr(q, "step"))
    blk = model.blocks[0].attn.qkv
    assert blk.adaround is not None and not blk.adaround.soft
    assert model.patch_embed.proj.adaround is None  # outside the stage: untouched
    finalize_for_eval(model)
    check_ready_for_eval(model)


def test_block_reconstruction_beats_nearest_rounding_on_the_unit():
    torch.manual_seed(0)
    base = calibrate(quantize_(tiny_cnn(), QuantConfig(w_bits=2, a_bits=8, first_last_bits=None)), X)
    recon = copy.deepcopy(base)
    ReconEngine(
        recon, X, ReconConfig(iters=150, batch_size=32, learn_acts=False, weight_lr=1e-2)
    ).reconstruct([("0", "1", "2"), ("3", "4", "5")])
    fp = tiny_cnn()
    err_base = (base(X) - fp(X)).pow(2).mean()
    err_recon = (recon(X) - fp(X)).pow(2).mean()
    assert err_recon < err_base


def test_recon_config_validation():
    with pytest.raises(ConfigError, match="drop_prob"):
        ReconConfig(drop_prob=1.5)
    with pytest.raises(ConfigError, match="Nothing to learn"):
        ReconConfig(learn_weights=False, learn_acts=False)
    model = quantize_(tiny_cnn(), QuantConfig())
    with pytest.raises(ConfigError, match="not modules"):
        ReconEngine(model, X, ReconConfig()).reconstruct([("nope",)])


def test_repq_vit_reparameterisation_is_exact_in_fp_and_reproduces_per_channel_codes():
    fp = tiny_vit(fused=False)
    with torch.no_grad():  # give LayerNorm outputs strongly channel-dependent ranges, as in real ViTs
        for blk in fp.blocks:
            blk.norm1.weight.mul_(torch.logspace(-1, 1, 16))
            blk.norm1.bias.add_(torch.linspace(-2, 2, 16))
    model = calibrate(quantize_(copy.deepcopy(fp), QuantConfig(w_bits=8, a_bits=4)), X)
    named = dict(model.named_modules())
    pairs = find_norm_linear_pairs(model, X, FWD)
    assert pairs["blocks.0.norm1"] == ["blocks.0.attn.qkv"] and pairs["blocks.1.norm2"] == [
        "blocks.1.mlp.fc1"
    ]
    assert "norm" not in pairs  # the final norm feeds pooling, not a Linear
    norm, lin = named["blocks.0.norm1"], named["blocks.0.attn.qkv"]
    step, zero = channel_qparams(model, norm, X, 4, False, "minmax", 64, FWD)
    set_per_channel([lin], step, zero)
    with quant_disabled(model):
        ref_fp = model(X)
    for _, q in iter_quantizers(model):  # isolate the post-LN quantizer
        q.enabled = q is lin.a_quant
    ref_q = model(X)
    codes_in = []
    h = lin.register_forward_pre_hook(lambda _m, a: codes_in.append(a[0]))
    model(X)
    before = lin.a_quant(codes_in[-1])
    reparameterize(norm, [lin], step, zero)
    model(X)
    after = lin.a_quant(codes_in[-1])
    h.remove()
    # identical codes: the de-quantized per-tensor values equal the re-scaled per-channel ones
    r1 = step / step.mean()
    recovered = r1 * (after - step.mean() * (zero - zero.mean().round()))
    torch.testing.assert_close(recovered, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(X), ref_q, atol=1e-5, rtol=1e-5)
    with quant_disabled(model):
        torch.testing.assert_close(model(X), ref_fp, atol=1e-5, rtol=1e-5)
    assert lin.a_quant.granularity.kind == "tensor"


def test_repq_init_keeps_fp_function_and_uses_log2_shift_form():
    fp = tiny_vit(fused=False)
    model = copy.deepcopy(fp)
    pairs = repq_init(model, X, RepQViTConfig(), FWD)
    assert len(pairs) == 4
    with quant_disabled(model):
        torch.testing.assert_close(model(X), fp(X), atol=1e-5, rtol=1e-5)
    assert model.blocks[0].attn.av.qa.shift_form and model.blocks[0].attn.av.qa.tau == 2


def test_mgrq_global_term_is_zero_for_an_unquantized_block_and_normalised_at_iteration_zero():
    z = torch.randn(4, 10)
    assert global_kl(z, z).item() == pytest.approx(0.0, abs=1e-7)
    assert global_kl(z + torch.randn(4, 10), z).item() > 0
    model = calibrate(quantize_(tiny_vit(), QuantConfig(w_bits=3, a_bits=3)), X)
    loss = MGRQLoss()
    calls = []

    def spy(q_out, fp_out, ctx):
        value = loss(q_out, fp_out, ctx)
        # the FP block output pushed through the FP rest reproduces the FP logits: zero global term
        lossless = global_kl(ctx.rest_forward(fp_out), ctx.fp_output())
        calls.append((value.item(), dict(loss.last), loss.norms, lossless.item()))
        return value

    spy.needs_layer_errors = True
    spy.start_unit = loss.start_unit
    ReconEngine(model, X, ReconConfig(iters=5, batch_size=8)).reconstruct([("blocks.0",)], spy)
    # normalisers: the iteration-0 terms with nearest rounding, larger than the soft (weight-exact) ones
    norms = calls[0][2]
    assert norms[0] > calls[0][1]["block"] and norms[2] > calls[0][1]["local"]
    b0, g0, l0 = calls[0][1]["block"], calls[0][1]["global"], calls[0][1]["local"]
    assert calls[0][0] == pytest.approx(b0 + norms[0] * (g0 / norms[1] + l0 / norms[2]), rel=1e-5)
    assert all(c[2] == calls[0][2] for c in calls)  # normalisers frozen after iteration 0
    assert calls[0][1]["global"] > 0 and calls[0][1]["local"] > 0
    assert all(c[3] == pytest.approx(0.0, abs=1e-6) for c in calls)


def test_ln_without_affine_is_refused():
    norm = nn.LayerNorm(4, elementwise_affine=False)
    with pytest.raises(ConfigError, match="affine"):
        reparameterize(norm, [], torch.ones(4), torch.zeros(4))


def test_undecided_fraction_is_reported_and_falls_as_the_budget_grows():
    """The convergence measure of issue 13: AdaRound variables strictly inside (0, 1) when hardened."""
    base = calibrate(quantize_(tiny_cnn(), QuantConfig(w_bits=2, a_bits=8, first_last_bits=None)), X)
    fractions = []
    for iters in (5, 200):
        model = copy.deepcopy(base)
        cfg = ReconConfig(iters=iters, batch_size=16, learn_acts=False, weight_lr=1e-2)
        fractions.append(ReconEngine(model, X, cfg, seed=0).reconstruct([("0", "1", "2")])[0]["undecided"])
    assert fractions[0] > 0.9  # soft AdaRound starts at the fractional part: nothing decided
    assert fractions[1] < 0.5 * fractions[0]
    only_acts = ReconEngine(copy.deepcopy(base), X, ReconConfig(iters=2, learn_weights=False))
    assert math.isnan(only_acts.reconstruct([("0", "1", "2")])[0]["undecided"])
