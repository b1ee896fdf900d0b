"""The search rig's renderer and detector: determinism, geometry, distance cues, blob detection."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from sims.rigs.panorama import (
    detect_blobs,
    distance_factor,
    make_objects,
    render_crop,
    render_panorama,
    voltage_to_pixel,
)
from sims.rigs.search_rig import SearchRigConfig, make_scene, true_pixel_to_voltage

CFG = SearchRigConfig()
PX_TO_V = functools.partial(true_pixel_to_voltage, cfg=CFG)


@pytest.fixture(scope="module")
def scene():
    return make_scene(CFG, np.random.default_rng(4))


def test_renders_are_deterministic_by_seed(scene):
    a = render_panorama(scene.geometry, scene.objects, CFG.class_names, np.random.default_rng(1))
    b = render_panorama(scene.geometry, scene.objects, CFG.class_names, np.random.default_rng(1))
    c = render_panorama(scene.geometry, scene.objects, CFG.class_names, np.random.default_rng(2))
    assert a.shape == (CFG.wide_px, CFG.wide_px, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_regions_have_distinct_colours_in_the_panorama(scene):
    img = render_panorama(scene.geometry, scene.objects, CFG.class_names, np.random.default_rng(0))
    means = {n: img[scene.labels == i].mean(0) for i, n in enumerate(CFG.class_names)
             if (scene.labels == i).sum() > 50}
    assert means["sky"][2] > means["road"][2] + 0.3          # sky is blue and bright, road dark
    assert means["tree"][1] > means["tree"][0] + 0.1          # vegetation is green
    assert means["sidewalk"].mean() > means["road"].mean() + 0.2


def test_voltage_to_pixel_inverts_the_true_map():
    px = np.random.default_rng(0).uniform(10, CFG.wide_px - 10, (200, 2))
    back = voltage_to_pixel(PX_TO_V(px), PX_TO_V, CFG.wide_px)
    assert np.abs(back - px).max() < 1e-6


def test_crop_and_panorama_show_the_same_world(scene):
    # A crop pointed at a pixel deep inside a region has that region's colour: the crop's voltage
    # grid is mapped back to the same analytic geometry that the panorama samples.
    pano = render_panorama(scene.geometry, scene.objects, CFG.class_names, np.random.default_rng(0),
                           blur_px=0, noise=0)
    lab = scene.labels
    checked = 0
    for cls in range(len(CFG.class_names)):
        rows, cols = np.nonzero(lab == cls)
        for r, c in list(zip(rows, cols, strict=True))[:: max(1, len(rows) // 3)][:3]:
            win = lab[max(r - 3, 0):r + 4, max(c - 3, 0):c + 4]
            v = PX_TO_V(np.array([[c + 0.5, r + 0.5]]))[0]
            if (win != cls).any() or np.abs(v).max() > 4.7:
                continue
            crop = render_crop(scene.geometry, scene.objects, CFG.class_names, v, CFG.fov_v, 24, PX_TO_V,
                               np.random.default_rng(0), blur_px=0, noise=0)
            ref = pano[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3].reshape(-1, 3).mean(0)
            assert np.abs(crop.reshape(-1, 3).mean(0) - ref).max() < 0.12
            checked += 1
    assert checked >= 5


def test_objects_shrink_and_fade_with_distance():
    rng = np.random.default_rng(0)
    near = np.column_stack([np.full(200, 64.0), np.full(200, 120.0)])
    far = np.column_stack([np.full(200, 64.0), np.full(200, 5.0)])
    objs = make_objects(np.vstack([near, far]), np.zeros((0, 2)), np.zeros(0), 128, rng)
    assert distance_factor(np.array([128.0]), 128, 3.0)[0] == pytest.approx(1.0)
    assert objs.size_px[:200].mean() > 2.5 * objs.size_px[200:].mean()
    assert objs.contrast[:200].mean() > 1.5 * objs.contrast[200:].mean()


def _blob_image(n=48, centre=(20.3, 27.6), sx=2.5, sy=5.0, noise=0.01, seed=0):
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    g = np.exp(-0.5 * (((xx - centre[0]) / sx) ** 2 + ((yy - centre[1]) / sy) ** 2))
    img = 0.6 - 0.4 * g + np.random.default_rng(seed).normal(0, noise, (n, n))
    return np.repeat(img[..., None], 3, axis=2)


def test_detector_finds_a_dark_blob_at_sub_pixel_accuracy():
    det = detect_blobs(_blob_image())
    assert len(det) == 1
    assert abs(det[0, 0] - 20.3) < 0.5 and abs(det[0, 1] - 27.6) < 0.8 and det[0, 2] > 10


def test_detector_rejects_poles_and_flat_crops():
    assert len(detect_blobs(_blob_image(sx=0.9, sy=15.0))) == 0       # thin and tall: a pole
    flat = 0.5 + np.random.default_rng(1).normal(0, 0.02, (48, 48, 3))
    assert len(detect_blobs(flat, min_snr=5.0)) == 0


def test_a_crop_near_a_target_shows_it_where_it_is(scene):
    # Pointed 0.08 V left of and 0.06 V above a target, the camera sees it at +(0.08, 0.06) V from
    # the crop centre: catches a flipped or transposed crop grid, not only a missing target.
    hits = 0
    shift = np.array([0.08, 0.06])
    for t_v in scene.targets_v:
        img = render_crop(scene.geometry, scene.objects, CFG.class_names, t_v - shift, CFG.fov_v, CFG.crop_px,
                          PX_TO_V, np.random.default_rng(0))
        det = detect_blobs(img, min_snr=5.0)
        off = det[:, :2] / CFG.crop_px * CFG.fov_v - CFG.fov_v / 2
        hits += bool(len(det)) and np.linalg.norm(off - shift, axis=1).min() < 0.03
    assert hits >= 0.75 * len(scene.targets_v)


def test_committed_segmenter_reproduces_its_card_on_held_out_panoramas():
    from sims.rigs.search_rig import SEGMENTER_EVAL_KEY
    from sims.zoo.registry import read_card
    from sims.zoo.search_segmenter import NAME, panorama_dataset, segment_panorama

    card = read_card(NAME)
    assert card["val_miou"] > 3 * card["majority_miou"] and card["wall_time_s"] < 600
    x, y = panorama_dataset(SEGMENTER_EVAL_KEY, 2)
    names = ("road", "sidewalk", "tree", "building", "sky")
    for img, lab in zip(x, y, strict=True):
        probs = segment_panorama(img[:3].numpy().transpose(1, 2, 0), names)
        assert probs.shape == lab.shape + (5,) and np.allclose(probs.sum(-1), 1.0, atol=1e-5)
        assert (probs.argmax(-1) == lab.numpy()).mean() > 0.97
    # the caller's class order is honoured
    swapped = segment_panorama(x[0, :3].numpy().transpose(1, 2, 0), names[::-1])
    assert np.allclose(swapped[..., ::-1], segment_panorama(x[0, :3].numpy().transpose(1, 2, 0), names))
