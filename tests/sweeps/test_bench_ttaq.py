"""bench_ttaq's knobs: the textures-C source and the ABL sign rows reach what they name."""
from __future__ import annotations

import pytest
import torch

from methods.errors import ConfigError
from sweeps import bench_ttaq as bt


def test_bad_source_and_signs_are_refused():
    with pytest.raises(ConfigError, match="source"):
        bt.TTAQBenchConfig(source="imagenet")
    for bad in ([], [0], [2], [True]):
        with pytest.raises(ConfigError, match="kappa_signs"):
            bt.TTAQBenchConfig(kappa_signs=tuple(bad))
    assert bt.TTAQBenchConfig(kappa_signs=(1, -1)).kappa_signs == (1.0, -1.0)


def test_the_kappa_sign_reaches_the_adaptive_balanced_loss(monkeypatch):
    seen = []

    class Spy:
        def __init__(self, model, tta, num_classes, abl, seed, abl_config=None):
            seen.append((abl, abl_config))

        def step(self, x, y, domain):
            pass

        def mean_error(self):
            return 0.0

    monkeypatch.setattr(bt, "StreamAdapter", Spy)
    model = torch.nn.Linear(1, 1)
    bt.mean_error(model, [], "tent", True, 0, kappa_sign=-1.0)
    bt.mean_error(model, [], "tent", False, 0)
    assert seen[0][0] is True and seen[0][1].kappa_sign == -1.0
    assert seen[1] == (False, None)


def test_the_textures_source_streams_textures_c_and_calibrates_on_textures(monkeypatch):
    configs = []
    monkeypatch.setattr(bt, "CorruptionStream", lambda cfg: configs.append(cfg) or [])
    bt.stream_batches(0, 2, None, "textures")
    assert configs[0].source == "textures" and configs[0].severity == 2
    assert bt.SOURCES["textures"][0] == "cnn-bn-textures"
    assert bt.SOURCES["textures"][1]().shape[1:] == (1, 16, 16)
