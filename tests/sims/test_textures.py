"""textures-10 (sims/data/textures.py), textures-C streams, and the texture zoo models' cards."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cluster.zoo_cmd import metric_matches
from methods.errors import ConfigError
from sims.data import textures
from sims.data.digits_c import CorruptionStream, CorruptionStreamConfig
from sims.data.textures import NUM_CLASSES, load_textures_split
from sims.zoo import cnn_bn_textures, vit_textures
from sims.zoo.registry import ZOO, load_zoo_model, read_card, weights_path
from sims.zoo.training import file_sha256

MODELS = [cnn_bn_textures, vit_textures]


@pytest.mark.parametrize("size", textures.SIZES)
def test_splits_have_the_stated_sizes_balance_range_and_are_deterministic(size):
    x, y = load_textures_split("train", size)
    xt, yt = load_textures_split("test", size)
    assert x.shape == (3000, 1, size, size) and xt.shape == (1000, 1, size, size)
    assert torch.equal(torch.bincount(y), torch.full((NUM_CLASSES,), 300))
    assert torch.equal(torch.bincount(yt), torch.full((NUM_CLASSES,), 100))
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    textures._split.cache_clear()
    x2, y2 = load_textures_split("train", size)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_test_patches_come_from_columns_no_training_patch_covers():
    """Each test patch lies right of the 70 % column cut and each train patch left of it: found by
    locating a patch in its source image (exact match of the pixels)."""
    size = 16
    images = textures.source_images()
    for split, side in (("train", "left"), ("test", "right")):
        x, y = load_textures_split(split, size)
        for i in range(0, len(x), 97):  # a sample of patches of every class
            image = images[int(y[i])]
            cut = int(textures.TRAIN_FRACTION * image.shape[1])
            patch = x[i, 0].numpy()
            windows = np.lib.stride_tricks.sliding_window_view(image, (size, size))
            rows, cols = np.nonzero((windows == patch).all(axis=(2, 3)))
            assert len(cols), "patch not found in its class's image"
            assert (cols + size <= cut).all() if side == "left" else (cols >= cut).all()


def test_bad_split_or_size_is_a_clear_error():
    with pytest.raises(ConfigError, match="split"):
        load_textures_split("val")
    with pytest.raises(ConfigError, match="pick one"):
        load_textures_split("train", 8)


def test_textures_c_stream_serves_corrupted_test_patches():
    cfg = CorruptionStreamConfig(corruptions=("gaussian_noise", "contrast"), severity=3, batch_size=50,
                                 image_size=16, source="textures", batches_per_domain=2)
    batches = list(CorruptionStream(cfg))
    assert len(batches) == 4 and batches[0].x.shape == (50, 1, 16, 16)
    clean, labels = load_textures_split("test", 16)
    first = batches[0]
    assert not torch.allclose(first.x, clean[: len(first.x)])  # corrupted, in a shuffled order
    assert set(first.y.tolist()) <= set(range(NUM_CLASSES))
    with pytest.raises(ConfigError, match="image_size"):
        CorruptionStreamConfig(source="textures", image_size=8)


@pytest.mark.parametrize("module", MODELS, ids=lambda m: m.NAME)
def test_committed_texture_models_reproduce_their_cards(module):
    path = weights_path(module.NAME)
    card = read_card(module.NAME)
    assert card["weights_sha256"] == file_sha256(path), "weights changed without a new card"
    spec = ZOO.get(module.NAME)
    got = spec.evaluate(load_zoo_model(module.NAME))
    assert metric_matches(card[spec.metric], got[spec.metric], spec.extra), (card[spec.metric], got)
    assert spec.extra["target"] <= got[spec.metric] < 0.95  # headroom: the point of the bed


def test_vit_card_records_the_post_layernorm_channel_spread():
    card = read_card(vit_textures.NAME)
    spread = card["post_layernorm_channel_spread"]
    assert len(spread) == 9 and card["max_post_layernorm_spread"] == max(spread.values())
    model = load_zoo_model(vit_textures.NAME)
    again = vit_textures.layernorm_channel_spread(model, load_textures_split("train", 16)[0][:512])
    assert again == pytest.approx(spread, rel=1e-4)


@pytest.mark.parametrize("module", MODELS, ids=lambda m: m.NAME)
def test_short_texture_training_is_deterministic(module):
    a, la = module.fit(seed=3, steps=3)
    b, lb = module.fit(seed=3, steps=3)
    assert la == lb and all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
