"""PTQ4SAM: BIG detection and sign folding, AGQ vs uniform on softmax maps, the quantization-ready SAM
wrappers, the outlier measurement and the registered pipeline on the tiny sam-shapes model."""
from __future__ import annotations

import copy

import pytest
import torch

from methods.errors import ConfigError
from methods.ptq4sam import (
    SAM_PTQ_METHODS,
    SamPTQConfig,
    apply_big_,
    channel_signs,
    fold_signs_,
    is_bimodal,
    kde_peaks,
)
from methods.quant import quant_disabled
from methods.quant.config import QuantConfig
from methods.quant.quantizers import Log2Quantizer, UniformQuantizer
from methods.quant.sam_modules import decoder_attentions, qk_outlier_ratios, quantize_sam_, run_sam

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sam():
    from sims.zoo.sam_shapes import load_sam_shapes

    return load_sam_shapes()


@pytest.fixture(scope="module")
def data(sam):
    from sims.data.shapes import make_shapes_dataset
    from sims.zoo.sam_shapes import prompt_set

    return prompt_set(sam, make_shapes_dataset(6, 0), "mixed")


def test_planted_bimodal_tensor_is_detected_and_unimodal_is_not():
    gen = torch.Generator().manual_seed(0)
    means = torch.where(torch.arange(32) % 2 == 0, 3.0, -3.0)  # half the channels around +3, half -3
    bimodal = torch.randn(500, 32, generator=gen) * 0.7 + means
    unimodal = torch.randn(500, 32, generator=gen)
    peaks = kde_peaks(bimodal)
    assert is_bimodal(bimodal) and len(peaks) == 2
    assert sorted(peaks)[0] < -2 and sorted(peaks)[1] > 2
    assert not is_bimodal(unimodal)
    # folding the per-channel signs makes the planted tensor unimodal (what BIG is for)
    assert not is_bimodal(bimodal * channel_signs(bimodal))


def test_channel_signs_follow_channel_means():
    x = torch.tensor([[1.0, -2.0, 0.0], [3.0, -1.0, 0.0]])
    assert channel_signs(x).tolist() == [1.0, -1.0, 1.0]


def test_sign_folding_is_exactly_equivalent_in_float(sam, data):
    idx = torch.arange(data.n_images)
    with torch.no_grad():
        ref = run_sam(sam, data, idx)
        folded = copy.deepcopy(sam)
        gen = torch.Generator().manual_seed(1)
        signs = {}
        for name, attn in decoder_attentions(folded):
            signs[name] = torch.where(torch.rand(attn.internal_dim, generator=gen) < 0.5, -1.0, 1.0)
            fold_signs_(attn, signs[name])
        out = run_sam(folded, data, idx)
    # the k outputs did change sign (the fold is not a no-op) ...
    name, attn = decoder_attentions(folded)[1]
    orig = dict(decoder_attentions(sam))[name]
    x = torch.randn(3, 5, attn.k_proj.in_features)
    assert torch.equal(attn.k_proj(x), orig.k_proj(x) * signs[name])
    # ... while masks, IoU predictions and image tokens are unchanged (sign flips are exact in float)
    for key in ("masks", "iou", "image_tokens"):
        assert torch.allclose(out[key], ref[key], atol=1e-5, rtol=0), key


def test_apply_big_folds_only_where_bimodal(sam, data):
    folded = copy.deepcopy(sam)
    name, attn = decoder_attentions(folded)[2]
    with torch.no_grad():  # plant a bimodal k distribution: a large +-bias on alternating channels
        attn.k_proj.bias += torch.where(torch.arange(attn.internal_dim) % 2 == 0, 6.0, -6.0)
    before = copy.deepcopy(folded)
    rows = {r["attention"]: r for r in apply_big_(folded, data)}
    assert rows[name]["bimodal"] and rows[name]["channels_flipped"] == attn.internal_dim // 2
    assert sum(r["bimodal"] for r in rows.values()) == 1  # the trained model's k outputs are unimodal
    with torch.no_grad():
        a, b = run_sam(before, data, torch.arange(3)), run_sam(folded, data, torch.arange(3))
    assert torch.allclose(a["masks"], b["masks"], atol=1e-5)


def _softmax_maps(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(2, 2, n, n, generator=gen) * 3.0  # peaked rows, a long tail of tiny values
    return scores.softmax(-1), torch.randn(2, 2, n, 16, generator=gen)


def test_agq_log2_beats_uniform_on_softmax_maps_at_4_bits():
    attn, v = _softmax_maps()
    log2 = Log2Quantizer(4)
    log2.start_observing()
    log2.observe(attn, v)
    log2.finish_observing()
    uni = UniformQuantizer(4, observer="minmax")
    uni.start_observing()
    uni(attn)
    uni.finish_observing()
    err_log2 = ((log2(attn) - attn) @ v).pow(2).sum()
    err_uni = ((uni(attn) - attn) @ v).pow(2).sum()
    assert err_log2 < 0.9 * err_uni, (float(err_log2), float(err_uni))
    assert log2.tau in (1, 2, 4)
    # the reason: uniform 4-bit steps of ~max/15 flush the long tail of small probabilities to zero,
    # the log grid keeps them
    small = (attn > 1e-3) & (attn < attn.amax() / 30)
    assert (log2(attn)[small] > 0).float().mean() > 2 * (uni(attn)[small] > 0).float().mean()


def test_wrappers_equal_segment_anything_with_quantizers_off(sam, data):
    q = copy.deepcopy(sam)
    quantize_sam_(q, QuantConfig(softmax_quant="log2"))
    with torch.no_grad(), quant_disabled(q):
        out = run_sam(q, data, torch.arange(data.n_images))
        ref = run_sam(sam, data, torch.arange(data.n_images))
    assert torch.equal(out["masks"], ref["masks"])
    kinds = {type(m).__name__ for m in q.modules()}
    assert {"QuantSamAttention", "QuantSamEncoderAttention", "QuantLinear", "QuantConv2d"} <= kinds
    assert not any(type(m).__name__.startswith("Quant") for m in q.prompt_encoder.modules())


def test_outlier_ratio_sees_a_planted_outlier(sam, data):
    rows = {(r["attention"], r["tensor"]): r for r in qk_outlier_ratios(sam, data)}
    assert max(r["ratio"] for r in rows.values()) < 5  # the trained model: no extreme outliers
    planted = copy.deepcopy(sam)
    name, attn = decoder_attentions(planted)[0]

    def plant(_m, _a, out):  # one element of q_proj's output per call becomes huge
        out = out.clone()
        out[0, 0, 3] = 500.0
        return out

    attn.q_proj.register_forward_hook(plant)
    after = {(r["attention"], r["tensor"]): r for r in qk_outlier_ratios(planted, data)}
    assert after[(name, "q_proj.out")]["max_abs"] == 500.0
    assert after[(name, "q_proj.out")]["ratio"] > 50 * rows[(name, "q_proj.out")]["ratio"]
    assert after[(name, "k_proj.in")]["ratio"] == pytest.approx(rows[(name, "k_proj.in")]["ratio"])


def test_ptq4sam_runs_and_leaves_an_evaluable_model(sam, data):
    result = SAM_PTQ_METHODS.create("ptq4sam", iters=3, batch_size=2)(sam, data, seed=0)
    rep = result.report
    assert rep["method"] == "ptq4sam" and len(rep["big"]) == len(decoder_attentions(sam))
    assert [u["unit"] for u in rep["recon"]["units"]][-1] == "image_encoder.neck"
    assert all(q.drop_prob == 1.0 for q in result.model.modules() if hasattr(q, "drop_prob"))
    softmax_q = [m for m in result.model.modules() if isinstance(m, Log2Quantizer)]
    assert softmax_q and all(m.calibrated for m in softmax_q)
    with torch.no_grad():
        q_out = run_sam(result.model, data, torch.arange(data.n_images))["masks"]
        fp_out = run_sam(sam, data, torch.arange(data.n_images))["masks"]
    agree = ((q_out > 0) == (fp_out > 0)).float().mean()
    assert 0.8 < agree < 1.0  # quantized: close to FP but not identical


@pytest.mark.parametrize("bad", [{"w_bits": 1}, {"a_bits": 0}, {"max_prompts": 0}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ConfigError, match="must be"):
        SamPTQConfig(**bad)


def test_non_sam_model_is_refused(data):
    with pytest.raises(ConfigError, match="segment_anything Sam"):
        SAM_PTQ_METHODS.get("ptq4sam").run(torch.nn.Linear(2, 2), data)
