"""vit-textures-outliers: the outlier transform is float-equivalent and creates the outliers it claims."""
from __future__ import annotations

import json

import torch

from sims.zoo import vit_textures
from sims.zoo import vit_textures_outliers as vo
from sims.zoo.registry import WEIGHTS_DIR


def _model(seed: int = 0):
    torch.manual_seed(seed)
    m = vo.build().eval()
    with torch.no_grad():  # non-trivial affine so a wrong fold shows
        for _, norm, _ in vo.norm_consumer_pairs(m):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.3, 0.3)
    return m


def test_outlier_channels_keep_the_function_in_float():
    m = _model()
    x = torch.rand(16, 1, 16, 16)
    ref = m(x)
    factors = vo.inject_outlier_channels(m, seed=3)
    out = m(x)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert len(factors) == 2 * len(m.blocks) + 1
    assert all(len(f) == vo.CHANNELS and all(vo.LOW <= v <= vo.HIGH for v in f.values())
               for f in factors.values())


def test_outlier_channels_widen_the_post_layernorm_spread_tenfold():
    m = _model()
    x = torch.rand(64, 1, 16, 16)
    before = vit_textures.layernorm_channel_spread(m, x)
    vo.inject_outlier_channels(m, seed=3)
    after = vit_textures.layernorm_channel_spread(m, x)
    for name in after:
        assert after[name] >= 2 * before[name], name
    assert min(after.values()) >= 10


def test_the_committed_bed_has_the_outliers_on_its_card():
    card = json.loads((WEIGHTS_DIR / f"{vo.NAME}.json").read_text())
    base = json.loads((WEIGHTS_DIR / "vit-textures.json").read_text())
    assert card["min_post_layernorm_spread"] >= 10 > base["max_post_layernorm_spread"]
    assert abs(card["test_top1"] - base["test_top1"]) <= 0.002  # same function as its parent
