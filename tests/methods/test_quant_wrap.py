"""quantize_ wrappers, attention forwards, bits report, evaluation hygiene and MAC/BOP counts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from methods.errors import ConfigError
from methods.quant import (
    QuantConfig,
    QuantStateError,
    bits_report,
    calibrate,
    check_ready_for_eval,
    count_macs_bops,
    finalize_for_eval,
    iter_quantizers,
    quant_disabled,
    quantize_,
    set_drop_prob,
    set_quant_state,
)
from methods.quant.modules import QuantConv2d, QuantLinear, QuantMHA, QuantTimmAttention


def tiny_vit(fused: bool = True) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    m = VisionTransformer(
        img_size=8,
        patch_size=4,
        in_chans=1,
        num_classes=10,
        embed_dim=16,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
    ).eval()
    for blk in m.blocks:
        blk.attn.fused_attn = fused
    return m


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()


X = torch.randn(6, 1, 8, 8)


@pytest.mark.parametrize("fused", [True, False])
def test_quantize_with_everything_disabled_equals_fp_vit(fused):
    fp = tiny_vit(fused)
    ref = fp(X)
    q = quantize_(copy.deepcopy(fp), QuantConfig(softmax_quant="log2"))
    assert isinstance(q.blocks[0].attn, QuantTimmAttention)
    assert isinstance(q.blocks[0].attn.qkv, QuantLinear)
    calibrate(q, X)
    with quant_disabled(q):
        out = q(X)
    if fused:
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(out, ref)  # same op sequence as timm's non-fused branch
    assert not torch.allclose(q(X), ref, atol=1e-4)  # and quantization does change the output


def test_quantize_cnn_disabled_equals_fp_and_8bit_is_close():
    fp = tiny_cnn()
    q = quantize_(copy.deepcopy(fp), QuantConfig(w_bits=8, a_bits=8))
    assert isinstance(q[0], QuantConv2d) and isinstance(q[7], QuantLinear)
    calibrate(q, X)
    with quant_disabled(q):
        assert torch.equal(q(X), fp(X))
    torch.testing.assert_close(q(X), fp(X), atol=0.05, rtol=0.05)
    assert set(q.state_dict()) >= set(fp.state_dict())


def test_weight_and_activation_switches_are_independent():
    fp = tiny_cnn()
    q = calibrate(quantize_(copy.deepcopy(fp), QuantConfig(w_bits=2, a_bits=2, first_last_bits=None)), X)
    set_quant_state(q, weight=False, act=False)
    assert torch.equal(q(X), fp(X))
    set_quant_state(q, weight=True, act=False)
    w_only = q(X)
    set_quant_state(q, weight=False, act=True)
    a_only = q(X)
    assert not torch.allclose(w_only, fp(X)) and not torch.allclose(a_only, fp(X))
    assert not torch.allclose(w_only, a_only)


def test_first_last_layer_policy_and_bits_report():
    q = quantize_(tiny_vit(), QuantConfig(w_bits=4, a_bits=4, first_last_bits=8))
    rows = {r["name"]: r for r in bits_report(q)}
    assert rows["patch_embed.proj"]["w_bits"] == 8 and rows["head"]["w_bits"] == 8
    assert rows["blocks.0.attn.qkv"]["w_bits"] == 4 and rows["blocks.0.attn.qk"]["a_bits"] == 4
    q2 = quantize_(tiny_vit(), QuantConfig(), filter_fn=lambda m, n: not n.startswith("head"))
    rows2 = {r["name"]: r for r in bits_report(q2)}
    assert rows2["head"]["kind"] == "Linear (fp)"
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_(q, QuantConfig())


@pytest.mark.parametrize("batch_first", [True, False])
def test_quantized_mha_disabled_matches_torch(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first).eval()
    holder = nn.Module()
    holder.mha = copy.deepcopy(mha)
    quantize_(holder, QuantConfig())
    assert isinstance(holder.mha, QuantMHA)
    assert isinstance(holder.mha.out_proj, QuantLinear) and isinstance(holder.mha.q_proj, QuantLinear)
    x = torch.randn(3, 5, 8)
    kpm = torch.zeros(3, 5, dtype=torch.bool) if batch_first else torch.zeros(5, 3, dtype=torch.bool)
    kpm[0, -1] = True
    kpm = kpm if batch_first else kpm.T.contiguous()
    causal = (
        torch.ones(5, 5, dtype=torch.bool).triu(1)
        if batch_first
        else torch.ones(3, 3, dtype=torch.bool).triu(1)
    )
    for kw in ({}, {"key_padding_mask": kpm}, {"attn_mask": causal}):
        if not batch_first and "key_padding_mask" in kw:
            kw = {"key_padding_mask": torch.zeros(5, 3, dtype=torch.bool)}
        ref, ref_w = mha(x, x, x, **kw)
        out, w = holder.mha(x, x, x, **kw)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(w, ref_w, atol=1e-5, rtol=1e-5)


def test_eval_with_qdrop_prob_below_one_is_refused_ptq4sam_bug():
    """PTQ4SAM/SAQ-SAM reset drop_prob only for `post_act_fake_quantize` quantizers, leaving the rest at
    0.5 at test time (half the activations in FP). Reproduce that partial reset and require a refusal."""
    q = calibrate(quantize_(tiny_vit(), QuantConfig()), X)
    check_ready_for_eval(q)
    set_drop_prob(q, 0.5)
    for name, quant in iter_quantizers(q, "act"):
        if name.endswith("a_quant"):  # the buggy partial reset: only one family of quantizers
            quant.drop_prob = 1.0
    with pytest.raises(QuantStateError, match="drop probability 0.5"):
        check_ready_for_eval(q)
    torch.manual_seed(0)
    half_fp = q(X)
    finalize_for_eval(q)
    check_ready_for_eval(q)
    assert not torch.equal(half_fp, q(X))  # the bug changes what is measured


def test_eval_refused_when_a_quantizer_is_bypassed_or_uncalibrated():
    q = quantize_(tiny_cnn(), QuantConfig())
    with pytest.raises(QuantStateError, match="never calibrated"):
        check_ready_for_eval(q)
    calibrate(q, X)
    q[3].a_quant.enabled = False
    with pytest.raises(QuantStateError, match="disabled"):
        check_ready_for_eval(q)
    with pytest.raises(QuantStateError, match="no quantizers"):
        check_ready_for_eval(tiny_cnn())


def test_macs_and_bops_follow_the_definition():
    fp = tiny_cnn()
    q = calibrate(quantize_(copy.deepcopy(fp), QuantConfig(w_bits=4, a_bits=4, first_last_bits=8)), X)
    counts = count_macs_bops(q, X)
    by = {r["name"]: r for r in counts["layers"]}
    assert by["0"]["macs"] == 8 * 8 * 4 * 9  # conv 1->4, 3x3, 8x8 output
    assert by["3"]["macs"] == 4 * 4 * 8 * 4 * 9
    assert by["7"]["macs"] == 8 * 10
    assert by["3"]["bops"] == by["3"]["macs"] * 16 and by["0"]["bops"] == by["0"]["macs"] * 64
    assert counts["macs"] == count_macs_bops(fp, X)["macs"]
    assert counts["bops"] < count_macs_bops(fp, X)["bops"] / 16
    vit = calibrate(quantize_(tiny_vit(), QuantConfig()), X)
    rows = {r["name"]: r for r in count_macs_bops(vit, X)["layers"]}
    # q k^T over 2 heads, 5 tokens, head dim 8
    assert rows["blocks.0.attn.qk"]["macs"] == 2 * 5 * 5 * 8


def test_per_group_weights_and_report_formatting():
    from methods.quant import format_bits_report

    fp = tiny_vit()
    q = calibrate(
        quantize_(copy.deepcopy(fp), QuantConfig(w_bits=3, w_granularity="group", w_group_size=8)), X
    )
    wq = q.blocks[0].mlp.fc2.w_quant
    assert wq.step.shape == (16 * 32 // 8, 1)  # one step per (output channel, group of 8 inputs)
    per_channel = calibrate(quantize_(copy.deepcopy(fp), QuantConfig(w_bits=3)), X)
    err_group = (q.blocks[0].mlp.fc2.qweight() - fp.blocks[0].mlp.fc2.weight).pow(2).mean()
    err_chan = (per_channel.blocks[0].mlp.fc2.qweight() - fp.blocks[0].mlp.fc2.weight).pow(2).mean()
    assert err_group < err_chan
    text = format_bits_report(bits_report(q))
    assert "blocks.0.attn.qkv" in text and "QuantLinear" in text
    with pytest.raises(ConfigError, match="group_size"):
        QuantConfig(w_granularity="group")


def test_quantized_mha_calibrates_with_log2_softmax_and_is_ready():
    torch.manual_seed(0)
    holder = nn.Module()
    holder.mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(4, 6, 8)
    ref = holder.mha(x, x, x)[0]
    quantize_(holder, QuantConfig(softmax_quant="log2", first_last_bits=None))
    calibrate(holder, x, forward_fn=lambda m, xb: m.mha(xb, xb, xb)[0])
    check_ready_for_eval(holder)
    assert holder.mha.av.qa.tau in (1, 2, 4)
    out = holder.mha(x, x, x)[0]
    assert not torch.allclose(out, ref, atol=1e-4) and (out - ref).abs().mean() < 0.5 * ref.abs().mean()
