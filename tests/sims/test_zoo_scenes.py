"""Committed scenes zoo models (ddpm-scenes, scenes-classifier): files, cards, loading, sampling."""
from __future__ import annotations

import pytest
import torch

from cluster.zoo_cmd import metric_matches
from sims.zoo import ddpm_scenes, scenes_classifier
from sims.zoo.registry import ZOO, load_zoo_model, read_card, weights_path
from sims.zoo.training import file_sha256

CARD_FIELDS = ("data", "steps", "seed", "wall_time_s", "param_count", "environment", "weights_sha256")


@pytest.mark.parametrize("module", [ddpm_scenes, scenes_classifier], ids=lambda m: m.NAME)
def test_committed_files_and_card_fields(module):
    path = weights_path(module.NAME)
    card = read_card(module.NAME)
    assert path.stat().st_size < 16 * 1024 * 1024  # ddpm-scenes: 3.1M fp32 parameters, 12.5 MB
    assert path.with_suffix(".md").is_file()
    for key in CARD_FIELDS:
        assert key in card, key
    assert card["weights_sha256"] == file_sha256(path), "weights changed without a new card"
    model = load_zoo_model(module.NAME)
    assert sum(p.numel() for p in model.parameters()) == card["param_count"]


def test_scenes_classifier_reproduces_its_card_metric():
    spec = ZOO.get(scenes_classifier.NAME)
    card = read_card(scenes_classifier.NAME)
    got = spec.evaluate(load_zoo_model(scenes_classifier.NAME))
    assert metric_matches(card[spec.metric], got[spec.metric], spec.extra), (card[spec.metric], got)


def test_ddpm_scenes_card_records_fd_with_ci_and_the_real_floor():
    card = read_card(ddpm_scenes.NAME)
    key = ZOO.get(ddpm_scenes.NAME).metric
    n = card["eval"]["samples"]
    assert card[f"{key}_lo"] <= card[key] <= card[f"{key}_hi"]
    floor = card[f"real_train{n}_fd"]
    assert 0 < floor < card[key]  # generated scenes are farther from the test split than real ones
    assert (weights_path(ddpm_scenes.NAME).parent / card["sample_grid"]).is_file()
    assert card["class_shares_min"] > 0.0  # every class generated at least once (the card says how rarely)


def test_ddpm_scenes_loads_and_samples_deterministically():
    unet, scheduler = ddpm_scenes.load("ddim")
    assert len(unet.config.block_out_channels) == 4
    x = ddpm_scenes.sample(unet, scheduler, n=2, steps=3, seed=0)
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x, ddpm_scenes.sample(unet, scheduler, n=2, steps=3, seed=0))


@pytest.mark.slow
def test_ddpm_scenes_full_metric_reproduces_card():
    spec = ZOO.get(ddpm_scenes.NAME)
    card = read_card(ddpm_scenes.NAME)
    got = spec.evaluate(load_zoo_model(ddpm_scenes.NAME))
    assert metric_matches(card[spec.metric], got[spec.metric], spec.extra)
