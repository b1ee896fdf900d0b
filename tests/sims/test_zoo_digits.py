"""Committed digits zoo models: they load, reproduce their cards, and training is deterministic."""
from __future__ import annotations

import pytest
import torch

from cluster.zoo_cmd import metric_matches
from methods.errors import ConfigError
from sims.data.digits import load_digits_split
from sims.zoo import cnn_bn_digits, ddpm_digits, digits_classifier, vit_digits
from sims.zoo.registry import ZOO, load_zoo_model, read_card, weights_path
from sims.zoo.training import batches, file_sha256, random_shift

CLASSIFIERS = [cnn_bn_digits, vit_digits, digits_classifier]
ALL = [*CLASSIFIERS, ddpm_digits]
CARD_FIELDS = ("data", "steps", "seed", "wall_time_s", "param_count", "environment", "weights_sha256")


@pytest.mark.parametrize("module", ALL, ids=lambda m: m.NAME)
def test_committed_files_and_card_fields(module):
    path = weights_path(module.NAME)
    card = read_card(module.NAME)
    assert path.stat().st_size < 5 * 1024 * 1024
    assert path.with_suffix(".md").is_file()
    for key in CARD_FIELDS:
        assert key in card, key
    assert card["weights_sha256"] == file_sha256(path), "weights changed without a new card"
    assert "torch" in card["environment"]
    model = load_zoo_model(module.NAME)
    assert sum(p.numel() for p in model.parameters()) == card["param_count"]


@pytest.mark.parametrize("module", CLASSIFIERS, ids=lambda m: m.NAME)
def test_classifier_reproduces_card_metric(module):
    spec = ZOO.get(module.NAME)
    card = read_card(module.NAME)
    got = spec.evaluate(load_zoo_model(module.NAME))
    assert metric_matches(card[spec.metric], got[spec.metric], spec.extra), (card[spec.metric], got)
    assert got[spec.metric] >= spec.extra["target"]


@pytest.mark.parametrize("module", ALL, ids=lambda m: m.NAME)
def test_short_training_is_deterministic(module):
    steps = 2 if module is ddpm_digits else 5  # a DDPM step costs ~0.3 s on one idle core
    a, losses_a = module.fit(seed=3, steps=steps)
    b, losses_b = module.fit(seed=3, steps=steps)
    c, _ = module.fit(seed=4, steps=steps)
    assert losses_a == losses_b
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_random_shift_moves_content_with_zero_fill_and_batches_count():
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(50, 1, 6, 6)
    x[:, :, 2:4, 2:4] = 1.0
    y = random_shift(x, 2, gen)
    assert y.shape == x.shape and torch.equal(y.sum((1, 2, 3)), x.sum((1, 2, 3)))  # 2 px margin: nothing lost
    assert not torch.equal(y, x.expand_as(y))
    assert torch.equal(random_shift(x, 0, gen), x)
    got = list(batches(10, 4, 7, gen))
    assert len(got) == 7 and all(len(b) == 4 for b in got)
    assert len(set(torch.cat(got[:2]).tolist())) == 8  # no repeats within an epoch


def test_training_restores_thread_and_determinism_settings():
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    cnn_bn_digits.fit(seed=0, steps=1)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, det)


def test_digit_fd_floor_scale_and_input_handling():
    model = load_zoo_model(digits_classifier.NAME)
    card = read_card(digits_classifier.NAME)
    test, _ = load_digits_split("test", 16)
    train, _ = load_digits_split("train", 16)
    fd_self = digits_classifier.digit_fd(test, test, model)
    fd_train = digits_classifier.digit_fd(test, train, model)
    assert fd_self == pytest.approx(0.0, abs=1e-6)
    assert fd_train == pytest.approx(card["fd_test_vs_train"], rel=1e-3)
    # The scale a reader relies on: real < blurred < noise.
    assert card["fd_test_vs_train"] < card["fd_test_vs_blur3x3x2"] < card["fd_test_vs_noise"]
    # Same images in [-1, 1] with the matching value_range give the same distance.
    fd_pm1 = digits_classifier.digit_fd(test * 2 - 1, train * 2 - 1, model, value_range=(-1, 1))
    assert fd_pm1 == pytest.approx(fd_train, rel=1e-6)
    # 8×8 images are upsampled exactly as sims.data.digits does, so they match the 16×16 set.
    test8, _ = load_digits_split("test", 8)
    assert digits_classifier.digit_fd(test8, test, model) == pytest.approx(0.0, abs=1e-4)


def test_digit_fd_rejects_wrong_inputs():
    model = load_zoo_model(digits_classifier.NAME)
    test, _ = load_digits_split("test", 16)
    with pytest.raises(ConfigError, match="value_range"):
        digits_classifier.digit_features(model, test * 255)
    with pytest.raises(ConfigError, match=r"\(N, 1, H, W\)"):
        digits_classifier.digit_features(model, test.repeat(1, 3, 1, 1))


def test_ddpm_loads_and_samples_a_few_steps():
    unet, scheduler = ddpm_digits.load("ddim")
    card = read_card(ddpm_digits.NAME)
    assert type(scheduler).__name__ == "DDIMScheduler"
    assert type(ddpm_digits.build_scheduler("ddpm")).__name__ == "DDPMScheduler"
    assert scheduler.config.beta_schedule == card["scheduler_config"]["beta_schedule"] == "squaredcos_cap_v2"
    x = ddpm_digits.sample(unet, scheduler, n=4, steps=3, seed=0)
    assert x.shape == (4, 1, 16, 16) and torch.isfinite(x).all()
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x, ddpm_digits.sample(unet, scheduler, n=4, steps=3, seed=0))
    with pytest.raises(ConfigError, match="scheduler kind"):
        ddpm_digits.build_scheduler("euler")


def test_ddpm_card_records_sample_quality():
    card = read_card(ddpm_digits.NAME)
    spec = ZOO.get(ddpm_digits.NAME)
    assert spec.metric in card and card[spec.metric] > 0
    assert (weights_path(ddpm_digits.NAME).parent / card["sample_grid"]).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("module", CLASSIFIERS, ids=lambda m: m.NAME)
def test_full_retrain_reproduces_committed_bytes(module, tmp_path):
    card = module.train(tmp_path, seed=0)
    assert card["weights_sha256"] == read_card(module.NAME)["weights_sha256"]


@pytest.mark.slow
def test_ddpm_full_metric_reproduces_card():
    spec = ZOO.get(ddpm_digits.NAME)
    card = read_card(ddpm_digits.NAME)
    got = spec.evaluate(load_zoo_model(ddpm_digits.NAME))
    assert metric_matches(card[spec.metric], got[spec.metric], spec.extra)
