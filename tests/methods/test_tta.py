"""TTA methods on a (quantized) BN model: BN affine stays FP and trainable, quantized layers never
change, batch-statistics normalisation, Tent lowers entropy, CoTTA teacher/restore, resumable state."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from methods.errors import ConfigError, UnknownNameError
from methods.quant import calibrate, quantize_
from methods.quant.config import QuantConfig
from methods.tta import TTA_METHODS, BatchStatsNorm
from methods.tta.base import entropy
from methods.tta.tent import TentConfig


def tiny_bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )
    # source statistics from "training" data, so eval-mode BN and calibration ranges are sensible
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(99)))
    return model.eval()


def quantized_net(seed: int = 0) -> nn.Module:
    model = tiny_bn_net(seed)
    quantize_(model, QuantConfig(w_bits=4, a_bits=4, w_observer="minmax"))
    calibrate(model, torch.rand(32, 1, 8, 8))
    return model


def batch(seed: int = 1, n: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_methods_and_unknown_name_suggests():
    assert {"bn_adapt", "tent", "cotta"} <= set(TTA_METHODS.names())
    with pytest.raises(UnknownNameError, match="tent"):
        TTA_METHODS.get("tnet")


@pytest.mark.parametrize("name", ["bn_adapt", "tent", "cotta"])
def test_contract_every_method_on_quantized_model(name):
    model = quantized_net()
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if "bn" not in n}
    bn_names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    tta = TTA_METHODS.get(name).build(model, seed=0)
    # BN affine params are the trainable ones, fp32; nothing else is trainable
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{b}.{k}" for b in bn_names for k in ("weight", "bias")}
    assert all(p.dtype == torch.float32 for p in tta.params)
    for step in range(3):
        logits = tta.adapt(batch(step))
        assert logits.shape == (16, 5) and torch.isfinite(logits).all()
    # quantized layers (weights, steps, rounding) are never touched by adaptation
    for n, p in model.named_parameters():
        if not any(n.startswith(b + ".") for b in bn_names):
            assert torch.equal(p, weights[n]), n
    cfg = TTA_METHODS.get(name).config_cls()
    assert cfg.to_dict()["version"] == 1 and isinstance(cfg.search_space(), dict)


def test_tent_changes_bn_affine_and_lowers_entropy_on_repeated_batch():
    model = quantized_net()
    x = batch(3, 32)
    tta = TTA_METHODS.get("tent").build(model, TentConfig(lr=0.05, momentum=0.0))
    before = [p.detach().clone() for p in tta.params]
    ent0 = float(entropy(tta.adapt(x)).mean())
    for _ in range(20):
        tta.adapt(x)
    ent1 = float(entropy(tta.adapt(x)).mean())
    assert any(not torch.equal(a, b) for a, b in zip(before, tta.params, strict=True))
    assert ent1 < ent0


def test_batch_stats_norm_uses_test_batch_statistics():
    model = tiny_bn_net()
    x = batch(4) * 5 + 3  # far from the (default) running statistics
    bn = model[1]
    seen = {}
    model[2].register_forward_pre_hook(lambda m, a: seen.setdefault("y", a[0]))  # BN's (replaced) output
    with BatchStatsNorm(model, 0.0):
        model(x)
    y = seen["y"]
    # after batch-statistics normalisation each channel has mean beta (=0) and var gamma^2 (=1)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (y.var(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
    source_mean = bn.running_mean.clone()
    with BatchStatsNorm(model, 0.0):
        model(x)
    assert torch.equal(bn.running_mean, source_mean)  # source statistics untouched
    # source_weight=1 reproduces eval-mode BN exactly
    with torch.no_grad():
        ref = model(x)
        with BatchStatsNorm(model, 1.0):
            mixed = model(x)
    assert torch.allclose(ref, mixed, atol=1e-5)


def test_state_dict_resume_gives_same_predictions_as_uninterrupted():
    xs = [batch(10 + i) for i in range(6)]
    for name in ("tent", "cotta"):
        full = TTA_METHODS.get(name).build(quantized_net(), seed=5)
        ref = [full.adapt(x) for x in xs]
        first = TTA_METHODS.get(name).build(quantized_net(), seed=5)
        for x in xs[:3]:
            first.adapt(x)
        state = copy.deepcopy(first.state_dict())
        resumed = TTA_METHODS.get(name).build(quantized_net(), seed=5)
        resumed.load_state_dict(state)
        out = [resumed.adapt(x) for x in xs[3:]]
        for a, b in zip(ref[3:], out, strict=True):
            assert torch.allclose(a, b, atol=1e-6), name


def test_cotta_teacher_is_ema_and_restore_resets_to_source():
    from methods.tta.cotta import CoTTAConfig

    tta = TTA_METHODS.get("cotta").build(quantized_net(), CoTTAConfig(lr=0.1, rst=1.0, ap=0.0), seed=0)
    source = [p.detach().clone() for p in tta.params]
    tta.adapt(batch(1))
    # rst=1 restores every element to the source value after the step
    assert all(torch.equal(p, s) for p, s in zip(tta.params, source, strict=True))
    cfg = CoTTAConfig(lr=0.1, rst=0.0, mt=0.5, ap=0.0)
    tta2 = TTA_METHODS.get("cotta").build(quantized_net(), cfg, seed=0)
    src2 = [p.detach().clone() for p in tta2.params]
    tta2.adapt(batch(1))
    for t, s, p in zip(tta2.teacher_params, src2, tta2.params, strict=True):
        assert torch.allclose(t, 0.5 * s + 0.5 * p.detach(), atol=1e-6)


def test_bad_inputs_raise_config_errors():
    with pytest.raises(ConfigError, match="lr"):
        TentConfig(lr=0)
    with pytest.raises(ConfigError, match="at least 2"):
        TTA_METHODS.get("tent").build(quantized_net()).adapt(torch.rand(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="BatchNorm"):
        TTA_METHODS.get("tent").build(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)))
    with pytest.raises(ConfigError, match="expects a TentConfig"):
        TTA_METHODS.get("tent").build(quantized_net(), TTA_METHODS.get("cotta").config_cls())
