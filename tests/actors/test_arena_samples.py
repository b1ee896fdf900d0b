"""Arena samples from the CacheQuant grid's pipeline: same noise per seed across configurations."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from actors.arena_samples import preset_points, write_cachequant_samples
from cluster.arena_app import scan_models
from methods.errors import ConfigError


def load(path):
    return np.asarray(Image.open(path).convert("L"), dtype=float) / 255


def test_configurations_share_the_noise_of_each_seed(tmp_path):
    counts = write_cachequant_samples(tmp_path, preset_points(["fp", "cached5"]), [0, 1], steps=6, upscale=2)
    assert counts == {"fp": 2, "cached5": 2}
    cat = scan_models(tmp_path)
    assert sorted(cat) == ["cached5", "fp"] and sorted(cat["fp"]) == ["seed0000", "seed0001"]
    fp0, fp1 = load(cat["fp"]["seed0000"]), load(cat["fp"]["seed0001"])
    c0 = load(cat["cached5"]["seed0000"])
    assert fp0.shape == (32, 32)
    # caching perturbs a sample far less than a different seed changes it
    assert np.mean((c0 - fp0) ** 2) < 0.5 * np.mean((fp1 - fp0) ** 2)
    assert np.mean((c0 - fp0) ** 2) > 0  # and it does change it: a different configuration


def test_unknown_configuration_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="w8a8"):
        preset_points(["w8a9"])
