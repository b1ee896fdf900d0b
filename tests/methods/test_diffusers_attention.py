"""QuantAttnProcessor / install_quant_attention on tiny diffusers U-Nets and standalone Attentions."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from methods.errors import ConfigError
from methods.quant import QuantConfig, calibrate, iter_quantizers, quant_disabled
from methods.quant.diffusers_attention import QuantAttnProcessor, install_quant_attention
from methods.quant.modules import QuantMatMul
from methods.quant.quantizers import Log2Quantizer, UniformQuantizer

pytest.importorskip("diffusers")
from diffusers import UNet2DConditionModel, UNet2DModel  # noqa: E402
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0  # noqa: E402

CFG = QuantConfig(a_bits=4)
ATOL = 1e-5


def tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1, norm_num_groups=4, attention_head_dim=8,
    ).eval()


def tiny_cond_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1, norm_num_groups=4, cross_attention_dim=12, attention_head_dim=4,
    ).eval()


def unet_inputs(seed: int = 1, n: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.tensor([3, 700][:n])


def cond_inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([5, 500]), torch.randn(2, 5, 12, generator=g)


def n_attention(model: nn.Module) -> int:
    return sum(isinstance(m, Attention) for m in model.modules())


def processors(model: nn.Module) -> list[QuantAttnProcessor]:
    return [m for m in model.modules() if isinstance(m, QuantAttnProcessor)]


@torch.no_grad()
def test_uncalibrated_unet2d_equals_fp_and_counts():
    fp = tiny_unet()
    qm = copy.deepcopy(fp)
    n = install_quant_attention(qm, 4, CFG)
    assert n == n_attention(fp) == 4  # down 1, mid 1, up 2 (layers_per_block + 1)
    assert all(isinstance(m.processor, QuantAttnProcessor) for m in qm.modules() if isinstance(m, Attention))
    mods = list(qm.modules())
    for p in processors(qm):
        assert p.qk in mods and p.qk.qa in mods and p.av.qb in mods
    mm = [m for m in mods if isinstance(m, QuantMatMul)]
    assert len(mm) == 2 * n
    assert len(list(iter_quantizers(qm, "act"))) == 4 * n
    x, t = unet_inputs()
    assert torch.allclose(qm(x, t).sample, fp(x, t).sample, atol=ATOL)


@torch.no_grad()
def test_uncalibrated_cond_unet_equals_fp_with_and_without_mask():
    fp = tiny_cond_unet()
    qm = copy.deepcopy(fp)
    n = install_quant_attention(qm, 4, CFG)
    assert n == n_attention(fp) == 8  # attn1 + attn2 in 1 down, 1 mid, 2 up transformers
    x, t, ctx = cond_inputs()
    assert torch.allclose(qm(x, t, ctx).sample, fp(x, t, ctx).sample, atol=ATOL)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]])
    ref = fp(x, t, ctx, encoder_attention_mask=mask).sample
    assert not torch.allclose(ref, fp(x, t, ctx).sample, atol=1e-4)  # the mask matters
    assert torch.allclose(qm(x, t, ctx, encoder_attention_mask=mask).sample, ref, atol=ATOL)


ATTN_CASES = {
    "spatial_norm_temb_residual_rescale": dict(
        query_dim=32, heads=4, dim_head=8, spatial_norm_dim=3, residual_connection=True,
        rescale_output_factor=2.0, bias=True,
    ),
    "group_norm_upcast": dict(query_dim=8, heads=2, dim_head=4, norm_num_groups=2, upcast_attention=True,
                              upcast_softmax=True),
    "cross_norm_cross_qk_norm": dict(query_dim=8, heads=2, dim_head=4, cross_attention_dim=6,
                                     cross_attention_norm="layer_norm", qk_norm="layer_norm"),
    "cross_group_norm_cross_out_dim": dict(
        query_dim=8, heads=4, dim_head=3, out_dim=12, cross_attention_dim=6,
        cross_attention_norm="group_norm", cross_attention_norm_num_groups=2,
    ),
}


@pytest.mark.parametrize("case", sorted(ATTN_CASES))
@pytest.mark.parametrize("proc_cls", [AttnProcessor, AttnProcessor2_0])
@torch.no_grad()
def test_standalone_attention_features_equal_default(case, proc_cls):
    kw = ATTN_CASES[case]
    if proc_cls is AttnProcessor and "qk_norm" in kw:
        pytest.skip("AttnProcessor ignores qk_norm; refused (test_unsupported_attentions_raise_config_error)")
    torch.manual_seed(0)
    fp = Attention(**kw, processor=proc_cls()).eval()
    qm = copy.deepcopy(fp)
    assert install_quant_attention(qm, 4, CFG) == 1
    g = torch.Generator().manual_seed(3)
    call = {}
    if "spatial_norm_dim" in kw:  # 4-D input + temb (the SpatialNorm conditioning)
        x = torch.randn(2, 32, 3, 3, generator=g)
        call["temb"] = torch.randn(2, 3, 2, 2, generator=g)
    else:
        x = torch.randn(2, 6, 8, generator=g)
    if "cross_attention_dim" in kw:
        call["encoder_hidden_states"] = torch.randn(2, 5, 6, generator=g)
        call["attention_mask"] = torch.randn(2, 1, 5, generator=g)  # additive bias, broadcast over queries
    ref = fp(x, **call)
    assert torch.allclose(qm(x, **call), ref, atol=ATOL)
    if "temb" in call:  # temb really reaches spatial_norm
        other = dict(call, temb=call["temb"] + 1.0)
        assert not torch.allclose(qm(x, **other), ref, atol=1e-3)


def test_temb_is_not_filtered_by_diffusers(caplog):
    """diffusers drops kwargs not in `inspect.signature(processor.__call__)` with a warning."""
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4)
    install_quant_attention(attn, 4, CFG)
    with caplog.at_level(logging.WARNING):
        attn(torch.randn(1, 4, 8), temb=torch.randn(1, 8))
    assert "not expected" not in caplog.text


def calib(model, x, t):
    return calibrate(model, x, batch_size=len(x), forward_fn=lambda m, xb: m(xb, t[: len(xb)]))


@torch.no_grad()
def test_calibrated_4bit_error_measurable_bounded_and_switchable():
    fp = tiny_unet()
    qm = copy.deepcopy(fp)
    install_quant_attention(qm, 4, CFG)
    x, t = unet_inputs()
    calib(qm, x, t)
    qs = [q for _, q in iter_quantizers(qm, "act")]
    assert qs and all(q.calibrated and q.enabled for q in qs)
    ref = fp(x, t).sample
    out = qm(x, t).sample
    rel = float((out - ref).norm() / ref.norm())
    assert 1e-4 < rel < 0.3, rel
    with quant_disabled(qm):
        assert torch.allclose(qm(x, t).sample, ref, atol=ATOL)
    # 8 bits is closer than 4 bits (the bits really reach the quantizers)
    q8 = copy.deepcopy(fp)
    install_quant_attention(q8, 8, CFG)
    calib(q8, x, t)
    rel8 = float((q8(x, t).sample - ref).norm() / ref.norm())
    assert rel8 < rel / 4, (rel8, rel)


@torch.no_grad()
def test_operand_quantizers_see_scaled_q_k_probs_and_v():
    """qk.qa must observe q * scale (fails if scale is dropped or applied twice), qk.qb k, av.qa the
    softmax probabilities and av.qb v; ranges from hooks on to_q/to_k/to_v, independently."""
    model = tiny_unet()
    install_quant_attention(model, 4, CFG)
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    seen: dict[tuple[int, str], list[torch.Tensor]] = {}

    def hook(i, name):
        return lambda _m, _inp, out: seen.setdefault((i, name), []).append(out.detach())

    handles = [
        getattr(a, name).register_forward_hook(hook(i, name))
        for i, a in enumerate(attns)
        for name in ("to_q", "to_k", "to_v")
    ]
    procs = [a.processor for a in attns]
    for p in procs:
        for q in (p.qk.qa, p.qk.qb, p.av.qa, p.av.qb):
            q.start_observing()
    x, t = unet_inputs()
    model(x, t)
    for h in handles:
        h.remove()
    for i, (a, p) in enumerate(zip(attns, procs, strict=True)):
        assert a.scale == pytest.approx(8**-0.5)
        expected = ((p.qk.qa, "to_q", a.scale), (p.qk.qb, "to_k", 1.0), (p.av.qb, "to_v", 1.0))
        for quant, name, factor in expected:
            ref = torch.cat([o.flatten() for o in seen[(i, name)]]) * factor
            obs = quant.observer
            assert float(obs.lo) == pytest.approx(float(ref.min()), rel=1e-5)
            assert float(obs.hi) == pytest.approx(float(ref.max()), rel=1e-5)
        lo, hi = float(p.av.qa.observer.lo), float(p.av.qa.observer.hi)
        assert 0.0 <= lo < hi <= 1.0


class CountingQuant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls, self.shapes = 0, []

    def forward(self, x):
        self.calls += 1
        self.shapes.append(tuple(x.shape))
        return x


@torch.no_grad()
def test_make_factory_stubs_called_on_each_operand():
    fp = tiny_unet()
    qm = copy.deepcopy(fp)
    made: list[CountingQuant] = []

    def make():
        made.append(CountingQuant())
        return made[-1]

    n = install_quant_attention(qm, 4, CFG, make=make)
    assert len(made) == 4 * n and len({id(m) for m in made}) == 4 * n
    mods = list(qm.modules())
    assert all(any(s is m for m in mods) for s in made)
    x, t = unet_inputs()
    assert torch.allclose(qm(x, t).sample, fp(x, t).sample, atol=ATOL)
    assert all(s.calls == 1 for s in made)
    for a in (m for m in qm.modules() if isinstance(m, Attention)):
        p, heads = a.processor, a.heads
        (qa,), (qb,), (pa,), (vb,) = (s.shapes for s in (p.qk.qa, p.qk.qb, p.av.qa, p.av.qb))
        B, H, L, d = qa
        assert (B, H) == (2, heads) and qb == (B, H, d, L) and pa == (B, H, L, L) and vb == (B, H, L, d)


@torch.no_grad()
def test_deepcopy_of_converted_model_forwards_equal():
    qm = tiny_unet()
    install_quant_attention(qm, 4, CFG)
    x, t = unet_inputs()
    calib(qm, x, t)
    twin = copy.deepcopy(qm)
    assert torch.equal(twin(x, t).sample, qm(x, t).sample)
    p0, p1 = processors(qm)[0], processors(twin)[0]
    assert p0 is not p1 and p0.qk.qa is not p1.qk.qa
    assert torch.equal(p0.qk.qa.step, p1.qk.qa.step)


def test_softmax_bits_and_log2_softmax_quantizer():
    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4)
    install_quant_attention(attn, 4, CFG, softmax_bits=8)
    p = attn.processor
    assert isinstance(p.av.qa, UniformQuantizer) and p.av.qa.bits == 8 and p.qk.qa.bits == 4
    attn2 = Attention(query_dim=8, heads=2, dim_head=4)
    install_quant_attention(attn2, 4, QuantConfig(a_bits=4, softmax_quant="log2"))
    assert isinstance(attn2.processor.av.qa, Log2Quantizer)
    assert not isinstance(attn2.processor.qk.qa, Log2Quantizer)


def test_unsupported_attentions_raise_config_error():
    torch.manual_seed(0)
    added = Attention(query_dim=8, heads=2, dim_head=4, added_kv_proj_dim=6)
    with pytest.raises(ConfigError, match="added k/v projections"):
        install_quant_attention(added, 4, CFG)
    kv = Attention(query_dim=8, heads=4, dim_head=2, kv_heads=2)
    with pytest.raises(ConfigError, match="k/v heads"):
        install_quant_attention(kv, 4, CFG)
    unscaled = Attention(query_dim=8, heads=2, dim_head=4, processor=AttnProcessor2_0())
    unscaled.scale = 1.0
    with pytest.raises(ConfigError, match="AttnProcessor2_0"):
        install_quant_attention(unscaled, 4, CFG)
    qk_norm = Attention(query_dim=8, heads=2, dim_head=4, qk_norm="layer_norm", processor=AttnProcessor())
    with pytest.raises(ConfigError, match="ignores norm_q"):
        install_quant_attention(qk_norm, 4, CFG)
    done = Attention(query_dim=8, heads=2, dim_head=4)
    install_quant_attention(done, 4, CFG)
    with pytest.raises(ConfigError, match="already has a QuantAttnProcessor"):
        install_quant_attention(done, 4, CFG)
    with pytest.raises(ConfigError, match="nn.Module"):
        install_quant_attention(Attention(query_dim=8, heads=2, dim_head=4), 4, CFG, make=lambda: None)


def test_nothing_changed_when_one_attention_is_unsupported():
    model = nn.ModuleList([Attention(query_dim=8, heads=2, dim_head=4),
                           Attention(query_dim=8, heads=2, dim_head=4, added_kv_proj_dim=6)])
    with pytest.raises(ConfigError):
        install_quant_attention(model, 4, CFG)
    assert not processors(model)


@torch.no_grad()
def test_bool_cross_attention_mask_follows_sdpa():
    """AttnProcessor2_0 hands a bool mask to SDPA (True = attend); the explicit softmax must agree."""
    torch.manual_seed(0)
    fp = Attention(query_dim=8, heads=2, dim_head=4, cross_attention_dim=6, processor=AttnProcessor2_0())
    qm = copy.deepcopy(fp)
    install_quant_attention(qm, 4, CFG)
    x, ctx = torch.randn(2, 4, 8), torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, False, False, True], [False, True, True, True, True]])[:, None]
    ref = fp(x, ctx, attention_mask=mask)
    assert not torch.allclose(ref, fp(x, ctx), atol=1e-4)
    assert torch.allclose(qm(x, ctx, attention_mask=mask), ref, atol=ATOL)
