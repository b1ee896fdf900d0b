"""scenes-6 (the 32x32 colour diffusion bed's data), scene-FD inputs and the shared DDPM trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.errors import ConfigError
from sims.data import scenes


def test_scene_is_deterministic_and_its_class_is_shape_and_background():
    a, ca = scenes.make_scene(7)
    b, cb = scenes.make_scene(7)
    assert np.array_equal(a, b) and ca == cb
    assert a.shape == (3, 32, 32) and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    for seed in range(40):
        _, cls = scenes.make_scene(seed)
        assert cls // 3 == seed % 2  # background kind from the seed's parity: smooth, then striped


def test_label_is_the_generated_shape_and_the_background_config_the_seed_names():
    """Regenerate with the shapes generator: a swapped config or label arithmetic would show."""
    from sims.data.shapes import make_shapes_image

    for seed in (0, 1, 10, 11, 1_000_003):
        img, cls = scenes.make_scene(seed)
        smp = make_shapes_image(seed, scenes.BACKGROUNDS[seed % 2])
        assert np.array_equal(img, smp.image) and cls == int(smp.labels[0]) - 1 + 3 * (seed % 2)
    assert scenes.BACKGROUNDS[0].stripe_weight == 0.0 and scenes.BACKGROUNDS[1].stripe_weight > 0.5


def test_splits_are_disjoint_balanced_and_bad_input_says_what_to_pass():
    xt, yt = scenes.load_scenes_split("test")
    assert xt.shape == (1200, 3, 32, 32) and yt.shape == (1200,)
    counts = torch.bincount(yt, minlength=scenes.NUM_CLASSES)
    assert counts.min() > 150  # six classes, none starved
    x0, _ = scenes.make_scene(scenes.SPLIT_FIRST_SEED["train"])
    assert not any(np.array_equal(x0, img.numpy()) for img in xt[:50])
    with pytest.raises(ConfigError, match="split"):
        scenes.load_scenes_split("val")
    with pytest.raises(ConfigError, match="32"):
        scenes.load_scenes_split("train", 16)


def test_scene_fd_refuses_wrong_shapes_and_ranges():
    from sims.zoo import scenes_classifier as sc

    model = sc.build()
    with pytest.raises(ConfigError, match="colour images"):
        sc.scene_features(model, torch.rand(4, 1, 32, 32))
    with pytest.raises(ConfigError, match="value_range"):
        sc.scene_features(model, torch.rand(4, 3, 32, 32) * 2 - 1)  # [-1, 1] passed as [0, 1]
    with pytest.raises(ConfigError, match="NaN"):
        sc.scene_features(model, torch.full((4, 3, 32, 32), float("nan")))
    feats = sc.scene_features(model, torch.rand(4, 3, 32, 32) * 2 - 1, value_range=(-1, 1))
    assert feats.shape == (4, sc.FEATURE_DIM) and feats.dtype == np.float64


def test_shared_ddpm_trainer_is_deterministic_and_lowers_the_loss():
    from sims.zoo import ddpm_scenes as ds

    m1, l1 = ds.fit(seed=0, steps=2)
    m2, l2 = ds.fit(seed=0, steps=2)
    assert l1 == l2
    pairs = zip(m1.state_dict().values(), m2.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    x = ds.sample(m1, ds.build_scheduler("ddim", ds.scheduler_config()), n=3, steps=2, seed=0)
    assert x.shape == (3, 3, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_deeper_bed_has_four_levels_and_cache_points_down_to_one_resblock():
    from methods.unet_blocks import cache_points
    from sims.zoo import ddpm_scenes as ds

    unet = ds.build()
    assert len(unet.down_blocks) == 4 and len(unet.up_blocks) == 4
    assert list(unet.config.block_out_channels) == sorted(unet.config.block_out_channels)
    names = [p.name for p in cache_points(unet)]
    assert "up.3.res.2" in names and "up.3.res.1" in names and "up.0.attn.0" in names
