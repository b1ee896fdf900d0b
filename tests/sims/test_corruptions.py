"""ImageNet-C style corruptions on digits: every corruption × severity × size, determinism, errors."""
from __future__ import annotations

import numpy as np
import pytest

from methods.errors import ConfigError, UnknownNameError
from sims.data import corruptions as C
from sims.data.digits import load_digits_split

NOISE = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
N_IMAGES = 3


@pytest.fixture(scope="module")
def digit_images() -> dict[int, np.ndarray]:
    """Three test digits per size, float32 (3, s, s) in [0, 1]."""
    return {s: load_digits_split("test", s)[0][:N_IMAGES, 0].numpy() for s in (8, 16, 32)}


def test_registry_holds_imagenet_c_order_then_extras() -> None:
    assert list(C.CORRUPTIONS)[:15] == [
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
        "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
        "jpeg_compression",
    ]
    assert list(C.CORRUPTIONS)[15:] == ["speckle_noise", "gaussian_blur"]
    assert C.OWN_IMPLEMENTATIONS <= set(C.CORRUPTIONS)


@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("name", list(C.CORRUPTIONS))
def test_corruption_contract(name: str, size: int, digit_images: dict[int, np.ndarray]) -> None:
    images = digit_images[size]
    u8 = np.round(images * 255).astype(np.uint8)
    change = {}
    for severity in C.SEVERITIES:
        deltas = []
        differs = []
        for i, (im_f, im_u) in enumerate(zip(images, u8, strict=True)):
            seed = C.corruption_seed(0, name, severity, i)
            a = C.corrupt(im_u, name, severity, seed)
            b = C.corrupt(im_u, name, severity, seed)
            f = C.corrupt(im_f, name, severity, seed)
            assert a.shape == (size, size) and a.dtype == np.uint8
            assert a.tobytes() == b.tobytes(), "same seed must give the same bytes"
            # float in → float32 out on the 1/255 grid, the same image as the uint8 path
            assert f.dtype == np.float32 and 0.0 <= f.min() and f.max() <= 1.0
            np.testing.assert_array_equal(np.round(f * 255).astype(np.uint8), a)
            other = C.corrupt(im_u, name, severity, seed + 1)
            differs.append(other.tobytes() != a.tobytes())
            deltas.append(np.abs(a.astype(np.float64) - im_u).mean() / 255)
        change[severity] = float(np.mean(deltas))
        if name in NOISE:
            assert all(differs), f"{name} s{severity}: a different seed must give different noise"
        if name in C.DETERMINISTIC:
            assert not any(differs), f"{name} takes no randomness, seeds must not matter"
        assert change[severity] > 0.0, f"{name} s{severity} left the images unchanged"
    assert change[5] > change[1], f"{name} at {size}px: severity 5 changed less than 1: {change}"


def test_seeded_corruptions_leave_the_global_numpy_stream_alone(digit_images) -> None:
    image = digit_images[16][0]
    np.random.seed(123)
    expected = np.random.rand(4)
    np.random.seed(123)
    for name in ("gaussian_noise", "snow", "frost", "motion_blur", "elastic_transform"):
        C.corrupt(image, name, 3, seed=7)
    np.testing.assert_array_equal(np.random.rand(4), expected)


def test_one_global_scope_per_batch_gives_the_same_bytes_as_per_image_scopes(digit_images) -> None:
    images = digit_images[32]
    for name in ("gaussian_noise", "snow", "frost", "glass_blur"):
        alone = [C.corrupt(im, name, 4, seed=i) for i, im in enumerate(images)]
        np.random.seed(5)
        expected = np.random.rand(3)
        np.random.seed(5)
        with C.global_numpy_scope():
            batched = [C.corrupt(im, name, 4, seed=i) for i, im in enumerate(images)]
        np.testing.assert_array_equal(np.random.rand(3), expected)
        for a, b in zip(alone, batched, strict=True):
            assert a.tobytes() == b.tobytes()


def test_corruption_seed_separates_its_inputs() -> None:
    seeds = {
        C.corruption_seed(b, n, s, i) for b in (0, 1) for n in ("fog", "snow") for s in (1, 5) for i in (0, 9)
    }
    assert len(seeds) == 16
    assert C.corruption_seed(0, "fog", 1, 0) == C.corruption_seed(0, "fog", 1, 0)


def test_impulse_noise_flips_the_documented_fraction() -> None:
    gray = np.full((32, 32), 128, dtype=np.uint8)
    for severity, amount in enumerate((0.03, 0.06, 0.09, 0.17, 0.27), start=1):
        flipped = [np.mean(C.impulse_noise(gray, severity, np.random.default_rng(k)) != 128)
                   for k in range(20)]
        assert abs(np.mean(flipped) - amount) < 0.02


def test_glass_shuffle_copies_like_the_package_on_rgb_arrays() -> None:
    """The package's swap line on an (H, W, 3) array copies; our 2-D version must match it."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(16, 16), dtype=np.uint8)
    ours = x.copy()
    C._glass_shuffle(ours, 2, 2, np.random.default_rng(5))
    rgb = np.stack([x] * 3, axis=-1)
    offsets_rng = np.random.default_rng(5)
    rows, cols = range(16 - 2, 2, -1), range(16 - 2, 2, -1)
    for _ in range(2):
        offsets = offsets_rng.integers(-2, 2, size=(len(rows), len(cols), 2))
        for i, h in enumerate(rows):
            for j, w in enumerate(cols):
                dx, dy = offsets[i, j]
                rgb[h, w], rgb[h + dy, w + dx] = rgb[h + dy, w + dx], rgb[h, w]
    np.testing.assert_array_equal(ours, rgb[..., 0])


def test_plasma_fractal_spans_unit_range_and_is_seeded() -> None:
    a = C._plasma_fractal(32, 2.0, np.random.default_rng(1))
    b = C._plasma_fractal(32, 2.0, np.random.default_rng(1))
    assert a.shape == (32, 32) and a.min() == 0.0 and a.max() == 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, C._plasma_fractal(32, 2.0, np.random.default_rng(2)))


def test_motion_blur_channels_stay_identical_in_the_package() -> None:
    """Why channel 0 is a faithful grayscale result of the package's RGB motion blur."""
    from PIL import Image

    x = np.random.default_rng(0).integers(0, 256, size=(16, 16), dtype=np.uint8)
    fn = C._package_functions()["motion_blur"]
    with C._seeded_global_numpy(3):
        out = np.uint8(fn(Image.fromarray(np.stack([x] * 3, axis=-1)), 5))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()


def test_bad_inputs_raise_typed_errors() -> None:
    image = np.zeros((16, 16), dtype=np.uint8)
    with pytest.raises(UnknownNameError, match="gaussian_noise"):
        C.corrupt(image, "gausian_noise", 1, 0)
    for severity in (0, 6, 2.5, True):
        with pytest.raises(ConfigError, match="severity"):
            C.corrupt(image, "fog", severity, 0)
    with pytest.raises(ConfigError, match="shape"):
        C.corrupt(np.zeros((1, 16, 16), dtype=np.uint8), "fog", 1, 0)
    with pytest.raises(ConfigError, match="shape"):
        C.corrupt(np.zeros((4, 4), dtype=np.uint8), "fog", 1, 0)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        C.corrupt(np.full((16, 16), 3.0), "fog", 1, 0)
    with pytest.raises(ConfigError, match="dtype"):
        C.corrupt(np.zeros((16, 16), dtype=np.int32), "fog", 1, 0)
