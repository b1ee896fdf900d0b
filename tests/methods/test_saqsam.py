"""SAQ-SAM: focus-mask IoU, PCC against MSE on planted outliers, PAR's use of the decoder image tokens,
layer skipping's block count, the drop-probability bug kept impossible and reproducible on purpose."""
from __future__ import annotations

import pytest
import torch

from methods.errors import ConfigError
from methods.ptq4sam import SAM_PTQ_METHODS
from methods.quant import QuantStateError, check_ready_for_eval
from methods.quant.config import QuantConfig
from methods.quant.observers import mse_range
from methods.quant.sam_modules import QuantSamAttention
from methods.saqsam import (
    OFFICIAL_CLIPS,
    PARLoss,
    SaqSamConfig,
    attention_focus_ious,
    clip_range,
    encoder_stages,
    focus_iou,
    focus_mask,
    pcc_search,
    reproduce_drop_bug_,
)

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


def test_official_clip_list_has_29_values_from_085_to_099999():
    assert len(OFFICIAL_CLIPS) == 29 and OFFICIAL_CLIPS[0] == 0.85 and OFFICIAL_CLIPS[-1] == 0.99999
    assert list(OFFICIAL_CLIPS) == sorted(OFFICIAL_CLIPS)


def test_focus_mask_and_iou_formula():
    a = torch.tensor([[[0.6, 0.35, 0.05], [0.2, 0.2, 0.6]]])  # (1 head, 2 queries, 3 keys)
    assert focus_mask(a).tolist() == [[[True, True, False], [False, False, True]]]  # > 0.5 * row max
    b = torch.tensor([[[0.9, 0.05, 0.05], [0.2, 0.2, 0.6]]])  # row 0 loses its second focus key
    assert focus_iou(a, a) == pytest.approx(1.0, abs=1e-5)
    assert focus_iou(a, b) == pytest.approx(2 / 3, abs=1e-5)  # intersection 2 of union 3
    assert focus_iou(a, torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])) == pytest.approx(0.0, abs=1e-6)


def test_pcc_search_returns_the_minimal_score_and_leaves_that_range():
    quant = _attention().k_proj.a_quant
    x = torch.linspace(-3, 3, 1001)
    from methods.quant.primitives import choose_qparams

    steps = [float(choose_qparams(*clip_range(x, c), 4, False)[0]) for c in OFFICIAL_CLIPS]
    target = 7  # the candidate whose attention map will match FP best
    a_fp = torch.ones(1, 1, 1, 29)

    def attention():  # focus IoU = (29 - distance to the target candidate) / 29: a peaked score curve
        i = min(range(29), key=lambda j: abs(steps[j] - float(quant.step)))  # which candidate is set
        row = torch.zeros(1, 1, 1, 29)
        row[..., : 29 - abs(i - target)] = 1.0
        return row

    p, scores = pcc_search(quant, x, attention, a_fp, OFFICIAL_CLIPS)
    assert p == OFFICIAL_CLIPS[target] and scores[target] == pytest.approx(0.0, abs=1e-5)
    assert scores[0] == pytest.approx(7 / 29, abs=1e-5) and min(scores) == scores[target]
    assert float(quant.step) == pytest.approx(steps[target])  # the winner's range is left set
    # all scores equal (identical maps): the looser clip wins
    p_tie, _ = pcc_search(quant, x, lambda: a_fp, a_fp, OFFICIAL_CLIPS)
    assert p_tie == 0.99999


def _attention(dim: int = 32, seed: int = 0) -> QuantSamAttention:
    from segment_anything.modeling.transformer import Attention

    from methods.quant import quantize_

    torch.manual_seed(seed)
    cfg = QuantConfig(a_bits=4, first_last_bits=None)
    return quantize_(QuantSamAttention(Attention(dim, 2), 4, cfg), cfg)


def _planted_inputs(seed: int = 0):
    """Bulk N(0, 1) inputs; channel 0 of two key tokens carries +-170 outliers that the k projection
    ignores (its weight column is zero), like SAM's massive activations in unused dimensions."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 8, 32, generator=gen)
    k = torch.randn(1, 64, 32, generator=gen)
    k[0, 5, 0], k[0, 40, 0] = 170.0, -170.0
    return q, k


def test_pcc_picks_a_tighter_clip_than_mse_and_a_higher_focus_iou_on_planted_outliers():
    attn = _attention()
    with torch.no_grad():
        attn.k_proj.weight[:, 0] = 0.0
    q, k = _planted_inputs()
    for m in attn.modules():
        if hasattr(m, "enabled"):
            m.enabled = False
    with torch.no_grad():
        a_fp = attn.probs(q, k)
    quant = attn.k_proj.a_quant
    p, scores = pcc_search(quant, k, lambda: attn.probs(q, k), a_fp, OFFICIAL_CLIPS)
    pcc_hi = float(clip_range(k, p)[1])
    with torch.no_grad():
        iou_pcc = float(focus_iou(attn.probs(q, k), a_fp))
        lo, hi = mse_range(k.reshape(1, -1), 4, False)
        quant.set_range(lo, hi)
        iou_mse = float(focus_iou(attn.probs(q, k), a_fp))
    assert pcc_hi < float(hi) / 5, (p, pcc_hi, float(hi))  # far tighter than MSE's range
    assert iou_pcc > iou_mse + 0.1, (iou_pcc, iou_mse)
    assert min(scores) == pytest.approx(1 - iou_pcc, abs=1e-5)  # the kept range is the argmin's


def test_par_loss_uses_the_decoder_image_tokens_only(sam, data):
    import copy

    from methods.quant.sam_modules import quantize_sam_

    qsam = quantize_sam_(copy.deepcopy(sam), QuantConfig())
    stage = encoder_stages(qsam)[0]
    assert stage == ("image_encoder.blocks.0", "image_encoder.blocks.1")  # global attention at block 1
    idx = torch.tensor([0, 2])
    with torch.no_grad():
        x = qsam.image_encoder.patch_embed(data.images[idx]) + qsam.image_encoder.pos_embed
        fp = qsam.image_encoder.blocks[1](qsam.image_encoder.blocks[0](x))
    q_out = fp + 0.05 * torch.randn_like(fp)

    class Ctx:
        model_input = idx

    def loss_value() -> float:
        loss = PARLoss(qsam, data, layer_skip=True)
        loss.start_unit(stage)
        with torch.no_grad():
            return float(loss(q_out, fp, Ctx()))

    base = loss_value()
    assert base > 0
    transformer = qsam.mask_decoder.transformer

    def perturb(which: int):
        def hook(_m, _a, out):
            out = list(out)
            out[which] = out[which] + torch.randn_like(out[which])
            return tuple(out)
        return transformer.register_forward_hook(hook)

    h = perturb(0)  # the token (query) output: PAR's encoder loss does not use it
    try:
        assert loss_value() == pytest.approx(base, rel=1e-6)
    finally:
        h.remove()
    h = perturb(1)  # the image-token (key) output: the loss must move
    try:
        assert abs(loss_value() - base) > 0.1 * base
    finally:
        h.remove()
    h = qsam.mask_decoder.output_upscaling.register_forward_hook(lambda _m, _a, o: o * 0)  # unused path
    try:
        assert loss_value() == pytest.approx(base, rel=1e-6)
    finally:
        h.remove()


def test_layer_skipping_counts_the_block_evaluations_it_saves(sam, data):
    iters = 3
    skip = SAM_PTQ_METHODS.create("saqsam", iters=iters, batch_size=2)(sam, data, seed=0).report["recon"]
    full = SAM_PTQ_METHODS.create("saqsam", iters=iters, batch_size=2, layer_skip=False)(
        sam, data, seed=0).report["recon"]
    # stage 0 = blocks 0-1 of 4: each PAR evaluation skips 2 blocks; stage 1 ends the encoder (0 to skip)
    # evaluations: one per iteration on the quantized path + one per distinct image for the cached target
    targets = {i for i in range(data.n_images)}
    n_evals_min = iters + 1
    assert skip["block_evals"] == 0 and full["block_evals_saved"] == 0
    assert full["block_evals"] == skip["block_evals_saved"]
    assert 2 * n_evals_min <= skip["block_evals_saved"] <= 2 * (iters + len(targets))
    assert skip["block_evals_saved"] % 2 == 0


def test_saqsam_is_evaluable_and_the_drop_bug_is_reproducible_only_on_purpose(sam, data):
    result = SAM_PTQ_METHODS.create("saqsam", iters=2, batch_size=2)(sam, data, seed=0)
    check_ready_for_eval(result.model)  # the default: every drop probability is 1
    clips = result.report["pcc"]["clips"]
    assert len(clips) == 4 * 7 and all(c["clip"] in OFFICIAL_CLIPS for c in clips)
    ious = attention_focus_ious(result.model, data, n_images=2)
    assert len(ious) == 7 and all(0.0 <= v <= 1.0 for v in ious.values())
    from methods.quant.sam_modules import run_sam

    with torch.no_grad():
        torch.manual_seed(0)
        clean = run_sam(result.model, data, torch.arange(3))["masks"]
        touched = reproduce_drop_bug_(result.model, result.report)
        torch.manual_seed(0)
        buggy = run_sam(result.model, data, torch.arange(3))["masks"]
    assert touched > 0 and not torch.equal(clean, buggy)
    with pytest.raises(QuantStateError, match="drop probability"):
        check_ready_for_eval(result.model)
    star = SAM_PTQ_METHODS.create("saqsam", recon=False)(sam, data, seed=0)
    assert reproduce_drop_bug_(star.model, star.report) == 0  # PCC-only has nothing to inflate


def test_pcc_ranges_survive_ordinary_calibration(sam, data):
    result = SAM_PTQ_METHODS.create("saqsam", recon=False)(sam, data, seed=0)
    first = result.report["pcc"]["clips"][4]  # cross attention token->image, q_proj input
    attn = dict(result.model.mask_decoder.named_modules())[first["attention"]]
    quant = attn.q_proj.a_quant
    hi = float(quant.step * (quant.qmax - quant.zero))
    assert hi < first["max_abs"] * 1.01  # a clip, and not overwritten by the MSE observer's range


@pytest.mark.parametrize("clips", [(), (0.0, 0.9), (0.9, 1.5), (0.3,)])
def test_clip_list_outside_unit_interval_is_refused(clips):
    with pytest.raises(ConfigError, match=r"clips must be .*\(0.5, 1\]"):
        SaqSamConfig(clips=clips)
