"""Sub-pixel stripe-centre extraction (methods/stripe_centre.py) on synthetic stripes whose centre
is known exactly; the stripes are drawn here from the formula, not by the rig's renderer."""
from __future__ import annotations

import numpy as np
import pytest

from methods.errors import ConfigError
from methods.stripe_centre import StripeCentreConfig, extract, grey_centroid, steger

STEGER = StripeCentreConfig(method="steger", sigma_px=1.5)
CENTROID = StripeCentreConfig(method="centroid", presmooth_px=0.0)


def stripe(centres: np.ndarray, slope: float = 0.0, sigma: float = 1.5, rows: int = 7, cols: int = 40,
           peak: float = 150.0, background: float = 10.0) -> np.ndarray:
    """Gaussian line sampled at pixel centres: row r's centre is c + slope·(r − rows//2)."""
    x = np.arange(cols)[None, None, :]
    r = (np.arange(rows) - rows // 2)[None, :, None]
    c = np.asarray(centres, dtype=float)[:, None, None] + slope * r
    return background + peak * np.exp(-0.5 * ((x - c) / sigma) ** 2)


SUBPIXEL = 17.0 + np.linspace(0.0, 0.95, 20)


# Noise-free, both methods are biased by up to ≈ 0.03 px, largest half-way between pixels:
# Steger's second-order Taylor step about the nearest pixel, the centroid's truncated window on a
# sampled Gaussian ("pixel locking"). A sign, axis or offset error is 0.1–1 px.
BIAS_PX = 0.035


@pytest.mark.parametrize("cfg", [STEGER, CENTROID])
def test_known_centre_is_found_to_three_hundredths_of_a_pixel(cfg):
    col, ok = extract(stripe(SUBPIXEL), cfg)
    assert ok.all()
    err = col - SUBPIXEL
    assert np.abs(err).max() < BIAS_PX
    assert abs(err[0]) < 1e-3 and abs(err.mean()) < 0.01      # exact on a pixel, no net shift


@pytest.mark.parametrize("slope", [-0.5, 0.3])
def test_steger_reports_the_tilted_stripe_at_the_centre_row(slope):
    col, ok = steger(stripe(SUBPIXEL, slope=slope), STEGER)
    assert ok.all() and np.abs(col - SUBPIXEL).max() < BIAS_PX
    col_c, ok_c = grey_centroid(stripe(SUBPIXEL, slope=slope), CENTROID)   # row-wise: unaffected
    assert ok_c.all() and np.abs(col_c - SUBPIXEL).max() < BIAS_PX


def test_centre_on_a_pixel_border_is_not_lost_to_a_background_point():
    # regression: with Steger's strict |t·n| ≤ 0.5 a centre at k + 0.5 fell just outside both
    # neighbours in floating point and a faint point of the background won instead (errors of ~10 px)
    centres = 12.5 + np.arange(12)
    img = stripe(centres) + np.random.default_rng(0).normal(0.0, 0.5, (12, 7, 40))
    col, ok = steger(img, STEGER)
    assert ok.all() and np.abs(col - centres).max() < 0.05


def test_noise_gives_unbiased_centres_with_spread_that_grows_with_noise():
    rng = np.random.default_rng(1)
    c = rng.uniform(12, 28, 400)
    spread = []
    for sd in (1.0, 4.0):
        for cfg in (STEGER, CENTROID):
            clean, _ = extract(stripe(c), cfg)
            col, ok = extract(stripe(c) + rng.normal(0.0, sd, (400, 7, 40)), cfg)
            err = col[ok] - clean[ok]                  # the noise's share of the error
            assert ok.mean() > 0.99 and abs(err.mean()) < 0.02
            spread.append(err.std())
    assert 0.005 < spread[0] < 0.1 and 0.005 < spread[1] < 0.1
    assert spread[2] > 2.5 * spread[0] and spread[3] > 2.5 * spread[1]    # 4× noise → ≈ 4× spread


def test_a_patch_without_a_stripe_is_not_ok():
    flat = 10.0 + np.random.default_rng(2).normal(0.0, 1.0, (5, 7, 40))
    for cfg in (STEGER, CENTROID):
        col, ok = extract(flat, cfg)
        assert not ok.any() and np.isnan(col).all()


def test_bad_input_is_refused_with_what_was_expected():
    with pytest.raises(ConfigError, match="one of"):
        StripeCentreConfig(method="canny")
    with pytest.raises(ConfigError, match="half_window"):
        StripeCentreConfig(half_window=0)
    with pytest.raises(ConfigError, match=r"\(N, H"):
        steger(np.zeros((7, 40)))
    space = StripeCentreConfig.search_space()
    assert set(space) <= set(StripeCentreConfig().to_dict())
