"""SLTNet (methods/sltnet.py): parameter count by exact arithmetic, LIF semantics, SDSA, twin, baseline."""
from __future__ import annotations

import math

import pytest
import torch
from spikingjelly.activation_based import functional
from torch import nn

from methods.errors import ConfigError
from methods.sltnet import (
    LIF,
    SDSA,
    SEG_MODELS,
    STB,
    SLTNet,
    SLTNetConfig,
    mask_attention,
    param_count,
    spike,
)

torch.set_num_threads(1)
TINY = dict(base=8, blocks=(1, 1, 1))


# -- parameter count: the official layout, by arithmetic -----------------------------------------


def _conv(ci, co, kh, kw=None, groups=1, bias=False):
    return ci // groups * co * kh * (kh if kw is None else kw) + (co if bias else 0)


def _bn(c):
    return 2 * c


def _scb(c, unused=True):
    h = c // 2
    n = _bn(c) + _conv(c, h, 1)
    n += 2 * (_conv(h, h, 3, 1) + _bn(h))  # 3x1, 1x3
    n += 4 * (_conv(h, h, 3, 1, groups=h) + _bn(h))  # the two depthwise branches
    n += 2 * 3  # two ECA Conv1d(1, 1, 3)
    n += _bn(h) + _conv(h, c, 1)
    return n + (2 * (_conv(h, h, 3, groups=h) + _bn(h)) if unused else 0)


def _qkv(d):
    return _conv(d, d, 1) + _bn(d) + _conv(d, d, 3, groups=d) + _conv(d, d, 1) + _bn(d) + _bn(d)


def _stb(d, unused=True):
    mlp = _conv(d, 4 * d, 1, 1, bias=True) + _bn(4 * d) + _conv(4 * d, d, 1, 1, bias=True) + _bn(d)
    return 4 * _qkv(d) + mlp + ((4 + 3) * _qkv(d) if unused else 0)  # SDSA1 (+ SDSA3, SDSA2)


def _official_count(classes, unused=True):
    u = 1 if unused else 0
    n = _conv(5, 32, 3) + _bn(32) + _conv(32, 32, 3) + _bn(32) + _conv(32, 32, 3) + _bn(32)
    n += _conv(32, 32, 3) + u * _bn(64) + 3 * _scb(64, unused) + _bn(64)  # down1 (64 - 32 conv channels)
    n += _conv(64, 64, 3) + u * _bn(128) + 3 * _scb(128, unused) + _bn(128)
    n += _conv(128, 32, 3) + u * _bn(32) + 3 * _scb(32, unused) + _bn(32)
    n += 2 * _stb(32, unused)
    n += _scb(32, unused) + _scb(16, unused) + _scb(16, unused)  # decoder SCBs
    n += _conv(32, 16, 3, bias=True) + 2 * _conv(16, 16, 3, bias=True) + u * 3 * _bn(16)  # up 1-3 (+ BN)
    n += 3 * _bn(16)  # bn_lif_5, 6, 7
    n += (3 if unused else 1) * _conv(16, 16, 1, bias=True)  # PA (+ PA1, PA2)
    lc = [(64, 16), (128, 16), (32, 32)]
    n += sum(_conv(ci, ci // 2, 3, 1) + _bn(ci // 2) + _conv(ci // 2, co, 1, 3) + _bn(co) for ci, co in lc)
    fe = [16, 16, 32]
    n += sum(_conv(c, c // 2, 1) + _bn(c // 2) + _conv(c // 2, c, 1) + _conv(2, 1, 3) + _bn(1)
             + _conv(c, c, 1) for c in fe)
    return n + _conv(16, classes, 1)


def test_full_width_reproduces_the_logged_parameter_counts():
    assert _official_count(6) == 413_508 and _official_count(11) == 413_588  # the official training logs
    assert param_count(SLTNet(SLTNetConfig())) == 413_508
    assert param_count(SLTNet(SLTNetConfig(n_classes=11))) == 413_588
    lean = SLTNet(SLTNetConfig(keep_unused=False))
    assert param_count(lean) == _official_count(6, unused=False)
    sdsa23 = 2 * (4 + 3) * _qkv(32)
    assert sdsa23 == 2 * (10_112 + 7_584) == 35_392  # "about 378k without the unused SDSA2/3"
    assert 413_508 - sdsa23 == 378_116


# -- LIF -----------------------------------------------------------------------------------------


def test_lif_membrane_trace_by_hand():
    x = torch.tensor([0.3, 0.3, 0.3, 0.6, 0.1, 0.7]).view(6, 1)
    s = LIF(v_threshold=1.0, decay=0.25)(x).view(-1)
    # u: 0.3, 0.375, 0.39375, 0.6984 -> spike, reset to 0; 0.1; 0.025 + 0.7 = 0.725 -> spike
    assert s.tolist() == [0, 0, 0, 1, 0, 1]
    s2 = LIF(v_threshold=2.0, decay=0.25)(x).view(-1)  # effective threshold 1.0
    # u: 0.3, 0.375, 0.394, 0.698, 0.275, 0.769: never above 1.0
    assert s2.sum() == 0
    no_leak = LIF(v_threshold=1.0, decay=1.0)(torch.full((3, 1), 0.2)).view(-1)
    assert no_leak.tolist() == [0, 0, 1]  # 0.2, 0.4, 0.6 > 0.5


def test_lif_resets_hard_to_zero():
    x = torch.tensor([0.9, 0.0, 0.45]).view(3, 1)
    # spike at step 0 and reset; then 0, 0.45 -> no spike (a soft reset would leave 0.4·0.25 + 0.45 > 0.5)
    assert LIF()(x).view(-1).tolist() == [1, 0, 0]


def test_surrogate_gradient_is_the_official_tanh_ramp():
    v = torch.tensor([-0.2, 0.0, 0.25, 0.5, 0.75, 1.0, 1.3], requires_grad=True)
    out = spike(v, temp=3.0)
    assert out.tolist() == [0, 0, 0, 0, 1, 1, 1]
    out.sum().backward()
    k = 3.0
    expected = [0.0] + [k * (1 - math.tanh(k * (u - 0.5)) ** 2) / (2 * math.tanh(k / 2)) for u in
                        (0.0, 0.25, 0.5, 0.75, 1.0)] + [0.0]
    expected[1] = expected[-2] = None  # clamp's gradient at the bounds is implementation-defined
    for got, want in zip(v.grad.tolist(), expected, strict=True):
        if want is not None:
            assert got == pytest.approx(want, rel=1e-5)
    assert v.grad[3] == pytest.approx(3 / (2 * math.tanh(1.5)), rel=1e-5)  # peak 1.6586 at the threshold
    assert v.grad[2] == pytest.approx(v.grad[4].item())  # symmetric about 0.5


# -- SDSA ----------------------------------------------------------------------------------------


def test_mask_attention_is_q_times_a_binary_channel_mask():
    # rows: 3 channels, columns: 2 tokens
    q = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]).reshape(1, 1, 3, 1, 2)
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).reshape(1, 1, 3, 1, 2)
    v = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]]).reshape(1, 1, 3, 1, 2)
    out, mask = mask_attention(q, k, v, LIF())
    # Σ_n k⊙v per channel: channel 0: k=(1,0)·v=(1,1) -> 1; channel 1: (0,1)·(1,0) -> 0; channel 2: 0
    assert mask.view(-1).tolist() == [1, 0, 0]
    assert torch.equal(out, q * mask.view(1, 1, 3, 1, 1)) and set(out.unique().tolist()) <= {0.0, 1.0}


def test_sdsa_cost_is_linear_in_tokens_and_output_is_masked_q():
    cfg = SLTNetConfig(**TINY)
    attn = SDSA(cfg, 8).eval()
    functional.set_step_mode(attn, "m")
    attn.proj_conv = nn.Identity()
    costs = []
    for n in (4, 8):
        x = torch.randn(1, 2, 8, n, n) * 3
        out = attn(x)
        q = attn.q_act(attn.q_conv(attn.head_act(x)))
        assert torch.equal(out, q * attn.mask) and attn.mask.shape == (1, 2, 8, 1, 1)
        assert set(attn.mask.unique().tolist()) <= {0.0, 1.0}
        costs.append(attn.ac_ops)
    assert costs[1] == 4 * costs[0]  # 4x the tokens, 4x the work (N·C, not N²·C)
    assert not any(isinstance(m, nn.Softmax) for m in attn.modules())


# -- twin, baseline, registry ---------------------------------------------------------------------


def test_ann_twin_swaps_every_lif_for_relu_and_nothing_else():
    snn, ann = SEG_MODELS.create("sltnet", **TINY), SEG_MODELS.create("sltnet-ann", **TINY)
    n_lif = sum(isinstance(m, LIF) for m in snn.modules())
    assert n_lif > 40 and sum(isinstance(m, nn.ReLU) for m in ann.modules()) == n_lif
    assert not any(isinstance(m, LIF) for m in ann.modules()) and param_count(ann) == param_count(snn)
    base = SEG_MODELS.create("snn-baseline", **TINY)
    stb_params = sum(param_count(m) for m in snn.modules() if isinstance(m, STB))
    assert not any(isinstance(m, STB) for m in base.modules())
    assert param_count(base) == param_count(snn) - stb_params > 0


def test_tiny_network_trains_end_to_end_and_spikes_are_binary():
    torch.manual_seed(0)
    model = SEG_MODELS.create("sltnet", **TINY, time_steps=2)
    x = torch.randn(2, 5, 32, 48)
    out, early = model(x)
    assert out.shape == early.shape == (2, 6, 32, 48)
    (out.square().mean() + 0.4 * early.square().mean()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.stem[0][0].weight.grad.abs().sum() > 0  # the surrogate lets gradient reach the stem
    seen = []
    hook = model.bn_act1[1].register_forward_hook(lambda m, i, o: seen.append(o))
    model.eval()
    assert model(x).shape == (2, 6, 32, 48)
    hook.remove()
    assert set(seen[0].unique().tolist()) <= {0.0, 1.0} and seen[0].shape[0] == 2


def test_bad_configs_and_inputs_are_refused():
    with pytest.raises(ConfigError, match="neuron"):
        SLTNetConfig(neuron="izhikevich")
    with pytest.raises(ConfigError, match="heads"):
        SLTNetConfig(base=12, heads=5)
    with pytest.raises(ConfigError, match="no_such_field"):
        SEG_MODELS.create("sltnet", no_such_field=1)
    with pytest.raises(ConfigError, match=r"\[B, 5, H, W\]"):
        SEG_MODELS.create("sltnet", **TINY)(torch.zeros(1, 2, 32, 32))
