"""The laser-stripe renderer (sims/rigs/stripes.py): where the stripe is, its noise, determinism."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from methods.errors import ConfigError
from sims.rigs.stripes import StripeRenderConfig, _speckle, render_stripes

QUIET = StripeRenderConfig(speckle_contrast=0.0, read_noise_dn=0.0, ambient_texture=0.0,
                           electrons_per_dn=1e6, albedo_range=(1.0, 1.0))


def _centroid(images: np.ndarray, background: float) -> np.ndarray:
    w = np.clip(images[:, images.shape[1] // 2, :] - background, 0.0, None)
    return (w * np.arange(images.shape[2])).sum(axis=1) / w.sum(axis=1)


def test_noise_free_stripe_sits_at_the_requested_column():
    c = 300.0 + np.linspace(0.0, 0.9, 10)
    p = render_stripes(QUIET, c, np.zeros(10), np.random.default_rng(0))
    assert p.images.shape == (10, QUIET.rows, QUIET.cols)
    # the pixel-integrated Gaussian's centroid is the centre (rounding to grey levels: ≈ 0.01 px)
    assert np.abs(_centroid(p.images, QUIET.background_dn) + p.col0 - c).max() < 0.02
    # the patch moves around the stripe, so its place in the crop is not given away
    p2 = render_stripes(QUIET, np.full(200, 300.0), np.zeros(200), np.random.default_rng(1))
    assert len(np.unique(p2.col0)) > 10 and np.all(np.abs(p2.col0 + QUIET.cols // 2 - 300) <= QUIET.jitter_px)


def test_slope_shifts_the_stripe_row_by_row():
    p = render_stripes(QUIET, np.array([500.2]), np.array([0.5]), np.random.default_rng(0))
    peaks = p.images[0].argmax(axis=1) + p.col0[0]
    assert np.allclose(np.diff(peaks).mean(), 0.5, atol=0.2)
    assert peaks[QUIET.rows // 2] == 500


def test_speckle_has_the_configured_contrast_and_unit_mean():
    for c in (0.2, 0.6):
        s = _speckle((50, 32, 32), replace(QUIET, speckle_contrast=c), np.random.default_rng(3))
        assert abs(s.mean() - 1.0) < 0.01
        assert abs(s.std() / s.mean() - c) < 0.1 * c
        assert s.min() > 0.0


def test_camera_noise_grows_with_read_noise_and_images_are_clipped_grey_levels():
    c, rng = np.full(300, 400.3), np.random.default_rng(4)
    base = replace(QUIET, electrons_per_dn=4.0)
    for rn in (0.5, 5.0):
        p = render_stripes(replace(base, read_noise_dn=rn), c, np.zeros(300), rng)
        got = p.images[:, 0, :5].std()                    # background corner: shot + read + rounding
        want = np.sqrt(base.background_dn / base.electrons_per_dn + rn ** 2 + 1 / 12)
        assert abs(got / want - 1) < 0.1
        assert np.all(p.images == np.round(p.images)) and p.images.min() >= 0 and p.images.max() <= 255
    hot = render_stripes(replace(QUIET, peak_dn=1000.0), c[:5], np.zeros(5), rng)
    assert hot.images.max() == 255                           # saturation at full scale


def test_same_seed_same_image_other_seed_other_image():
    cfg, c = StripeRenderConfig(), np.linspace(100, 900, 20)
    a = render_stripes(cfg, c, np.zeros(20), np.random.default_rng(5))
    b = render_stripes(cfg, c, np.zeros(20), np.random.default_rng(5))
    d = render_stripes(cfg, c, np.zeros(20), np.random.default_rng(6))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.col0, b.col0)
    assert not np.array_equal(a.images, d.images)


def test_bad_render_settings_are_refused():
    with pytest.raises(ConfigError, match="rows"):
        StripeRenderConfig(rows=6)
    with pytest.raises(ConfigError, match="speckle_contrast"):
        StripeRenderConfig(speckle_contrast=1.5)
    with pytest.raises(ConfigError, match="jitter_px"):
        StripeRenderConfig(jitter_px=30)
    with pytest.raises(ConfigError, match="finite"):
        render_stripes(StripeRenderConfig(), np.array([np.nan]), np.zeros(1), np.random.default_rng(0))
