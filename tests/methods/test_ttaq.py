"""TTAQ parts (our instantiation, methods/ttaq.py): each term's stated properties, and the PTQ method."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from methods.errors import ConfigError
from methods.quant import calibrate, check_ready_for_eval, quantize_, set_quant_state
from methods.quant.config import QuantConfig
from methods.quant.modules import QuantConv2d
from methods.ttaq import (
    AdaptiveBalancedLoss,
    TTAQConfig,
    TTAQReconLoss,
    balanced_logits,
    layer_vectors,
    lipschitz_penalty,
    pcr_consistency,
    pem_penalty,
    perturb,
    run_ttaq_ptq,
    second_moment,
)


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(9)))
    return model.eval()


def calib(n: int = 48) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(3))


# ---------------------------------------------------------------- PEM
def test_pem_zero_when_quantized_weights_equal_fp_and_positive_otherwise():
    w = torch.randn(6, 4, 3, 3)
    m = second_moment(torch.randn(500, 36))
    assert float(pem_penalty(w.clone(), w, m)) == 0.0
    assert float(lipschitz_penalty(w.clone(), w)) == 0.0
    assert float(pem_penalty(w + 0.1 * torch.randn_like(w), w, m)) > 0
    assert float(lipschitz_penalty(1.1 * w, w)) > 0


def test_pem_equals_expected_extra_error_under_input_noise():
    """tr(ΔW M ΔWᵀ) is E‖ΔW δ‖² for δ with second moment M (checked by Monte Carlo)."""
    gen = torch.Generator().manual_seed(0)
    dw = torch.randn(5, 7, generator=gen)
    delta = torch.randn(200_000, 7, generator=gen) * torch.linspace(0.1, 1.0, 7) + 0.3
    mc = float(((delta @ dw.T) ** 2).sum(1).mean())
    analytic = float(pem_penalty(dw, torch.zeros_like(dw), second_moment(delta)))
    assert analytic == pytest.approx(mc, rel=1e-4)


def test_pem_term_in_recon_loss_is_zero_with_weight_quantization_off():
    model = net()
    quantize_(model, QuantConfig(w_bits=2, a_bits=4, w_observer="minmax"))
    x = calib()
    calibrate(model, x)
    cfg = TTAQConfig(w_bits=2, a_bits=4, pem=True, pcr=False, iters=1)
    loss = TTAQReconLoss(model, x, cfg, 0, lambda m, xb: m(xb), ("8",))
    loss.start_unit(("3", "4", "5"))
    assert len(loss.pem_terms) == 1 and loss.pem_terms[0][2] is not None  # BN scale found
    assert float(loss.pem()) > 0  # 2-bit weights differ from FP
    set_quant_state(model, weight=False)
    assert float(loss.pem()) == 0.0


def test_layer_vectors_are_im2col_patches():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    x = torch.randn(2, 2, 5, 5)
    v = layer_vectors(conv, x)
    assert v.shape == (2 * 25, 18)
    out = (v @ conv.weight.reshape(3, -1).T).reshape(2, 25, 3).permute(0, 2, 1).reshape(2, 3, 5, 5)
    assert torch.allclose(out, conv(x), atol=1e-5)


# ---------------------------------------------------------------- PCR
def test_pcr_zero_when_perturbed_equals_clean_and_positive_otherwise():
    a = torch.randn(4, 3, 5, 5)
    assert float(pcr_consistency(a, a.clone())) == 0.0
    logits = torch.randn(6, 10)
    assert float(pcr_consistency(logits, logits.clone(), logits=True)) == pytest.approx(0.0, abs=1e-7)
    assert float(pcr_consistency(a + 0.1, a)) > 0
    assert float(pcr_consistency(logits, logits.flip(0), logits=True)) > 0


# PCR inside the reconstruction (zero for an identity perturbation with QDrop on, the perturbed pass
# seeing the perturbed inputs, the term entering with lambda_c, the fp_perturbed reading zero at the
# FP solution): tests/methods/test_ptq_bug_regressions.py, at engine level.


def test_perturb_is_seeded_bounded_and_changes_images():
    x = calib(16)
    a = perturb(x, torch.Generator().manual_seed(1))
    b = perturb(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert (a - x).abs().amax(dim=(1, 2, 3)).min() > 0
    with pytest.raises(ConfigError, match="N, C, H, W"):
        perturb(torch.rand(3, 8), torch.Generator())


# ---------------------------------------------------------------- ABL
def test_abl_leaves_logits_unchanged_for_uniform_statistics():
    z = torch.randn(7, 10)
    u = torch.full((10,), 0.1)
    assert torch.allclose(balanced_logits(z, u, u), z, atol=1e-6)
    abl = AdaptiveBalancedLoss(10)
    balanced_batch = torch.eye(10) * 5  # each class predicted once, equal entropies
    assert torch.allclose(abl(balanced_batch), balanced_batch, atol=1e-5)


def test_abl_tracks_frequent_class_and_is_resumable():
    abl = AdaptiveBalancedLoss(4)
    z = torch.tensor([[3.0, 0, 0, 0]]).repeat(16, 1)
    for _ in range(5):
        out = abl(z)
    assert abl.pi[0] > 0.5 and abl.pi[1:].max() < 0.2
    # the frequent class's logit is raised inside the loss (logit-adjusted loss form)
    assert out[0, 0] - out[0, 1] > z[0, 0] - z[0, 1]
    state = abl.state_dict()
    other = AdaptiveBalancedLoss(4)
    other.load_state_dict(state)
    assert torch.equal(other(z), abl(z))


def test_abl_inside_tent_changes_the_update_but_not_the_reported_logits():
    from methods.tta import TTA_METHODS

    x = calib(32)
    plain = TTA_METHODS.get("tent").build(net(), seed=0)
    adj = TTA_METHODS.get("tent").build(net(), logit_adjust=AdaptiveBalancedLoss(5), seed=0)
    first_plain, first_adj = plain.adapt(x), adj.adapt(x)
    assert torch.equal(first_plain, first_adj)  # scored before the update, raw logits
    assert not torch.equal(plain.adapt(x), adj.adapt(x))  # different updates


# ---------------------------------------------------------------- the PTQ method
def test_ttaq_ptq_runs_is_eval_ready_and_off_switch_equals_qdrop():
    from methods.ptq import PTQ_METHODS

    model, x = net(), calib()
    res = run_ttaq_ptq(model, x, TTAQConfig(w_bits=2, a_bits=4, iters=3, batch_size=16), seed=0)
    check_ready_for_eval(res.model)
    assert res.report["method"] == "ttaq" and len(res.report["recon"]) == 3
    assert PTQ_METHODS.get("ttaq").config_cls is TTAQConfig  # registered with the PTQ methods
    assert any(isinstance(m, QuantConv2d) for m in res.model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in res.model.modules())  # BN not folded
    off_cfg = TTAQConfig(w_bits=2, a_bits=4, iters=3, batch_size=16, pem=False, pcr=False)
    off = run_ttaq_ptq(model, x, off_cfg, 0)
    qdrop = PTQ_METHODS.get("qdrop")
    ref = qdrop.run(model, x, qdrop.make_config(w_bits=2, a_bits=4, iters=3, batch_size=16), seed=0)
    torch.manual_seed(0)
    with torch.no_grad():
        assert torch.equal(off.model(x), ref.model(x))


def test_ttaq_config_validation():
    with pytest.raises(ConfigError, match="pem_mode"):
        TTAQConfig(pem_mode="lipshitz")
    with pytest.raises(ConfigError, match="lambda_c"):
        TTAQConfig(lambda_c=-1)
    with pytest.raises(ConfigError, match="Unknown TTAQConfig key"):
        TTAQConfig.from_dict({"lamda_pem": 1})
    assert TTAQConfig().to_dict()["version"] == 1 and "lambda_pem" in TTAQConfig.search_space()
