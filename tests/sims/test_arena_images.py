"""Procedural arena images: written as <model>/<prompt_id>.png, degradation orders the models."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from methods.errors import ConfigError
from sims.arena_images import demo_true_order, procedural_images, write_folder


def test_folder_layout_and_degradation_order(tmp_path):
    imgs = procedural_images({"a": 0.0, "b": 0.1, "c": 0.3}, n_prompts=2, size=16)
    paths = write_folder(tmp_path, imgs, upscale=2)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == [
        f"{m}/prompt00{p}.png" for m in "abc" for p in (0, 1)]
    assert np.asarray(Image.open(tmp_path / "a" / "prompt000.png")).shape == (32, 32, 3)
    err = {m: np.mean((imgs[m]["prompt000"] - imgs["a"]["prompt000"]) ** 2) for m in "bc"}
    assert 0 < err["b"] < err["c"]  # more degradation, further from the clean scene
    assert demo_true_order({"a": 0.0, "b": 0.1, "c": 0.3}) == ["a", "b", "c"]
    assert not np.array_equal(imgs["a"]["prompt000"], imgs["a"]["prompt001"])  # prompts differ


def test_bad_names_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="letters"):
        write_folder(tmp_path, {"../x": {"p": np.zeros((4, 4))}})
    with pytest.raises(ConfigError, match="≥ 2 models"):
        procedural_images({"only": 0.0})
