"""Tests of the synthetic `shapes` instance-segmentation generator."""
from __future__ import annotations

import numpy as np
import pytest

from methods.errors import ConfigError
from sims.data.shapes import (
    CATEGORIES,
    ShapesConfig,
    make_shapes_dataset,
    make_shapes_image,
    mask_box,
    stack_samples,
    to_coco,
)


@pytest.fixture(scope="module")
def samples():
    return make_shapes_dataset(40, first_seed=100)


def _bytes(sample):
    arrays = (sample.image, sample.masks, sample.boxes, sample.points, sample.labels)
    return b"".join(a.tobytes() for a in arrays)


def test_same_seed_gives_same_bytes_and_other_seed_differs():
    a, b, c = make_shapes_image(7), make_shapes_image(7), make_shapes_image(8)
    assert _bytes(a) == _bytes(b)
    assert a.image.tobytes() != c.image.tobytes()


def test_dataset_uses_consecutive_seeds(samples):
    assert [s.seed for s in samples] == list(range(100, 140))
    assert _bytes(samples[3]) == _bytes(make_shapes_image(103))


def test_image_dtype_range_and_shapes(samples):
    for s in samples:
        k = len(s.labels)
        assert s.image.shape == (3, 64, 64) and s.image.dtype == np.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert s.masks.shape == (k, 64, 64) and s.masks.dtype == bool
        assert s.boxes.shape == (k, 4) and s.points.shape == (k, 2) and s.labels.shape == (k,)


def test_object_counts_and_labels(samples):
    counts = [len(s.labels) for s in samples]
    assert min(counts) >= 1 and max(counts) <= 4
    assert len(set(counts)) >= 3  # the count really varies
    labels = np.concatenate([s.labels for s in samples])
    assert set(labels.tolist()) == {cid for cid, _ in CATEGORIES}


def test_masks_visible_disjoint_and_large_enough(samples):
    cfg = ShapesConfig()
    for s in samples:
        assert (s.masks.sum(0) <= 1).all()  # visible parts never overlap
        assert (s.masks.sum((1, 2)) >= cfg.min_visible_area * 64 * 64).all()


def test_point_inside_mask_and_box_tight(samples):
    for s in samples:
        for m, box, pt in zip(s.masks, s.boxes, s.points, strict=True):
            x, y = int(pt[0]), int(pt[1])
            assert m[y, x]
            x0, y0, x1, y1 = (int(v) for v in box)
            assert m[y0:y1, x0:x1].sum() == m.sum()  # box contains the whole mask
            # tight: every edge row/column of the box touches the mask
            assert m[y0, x0:x1].any() and m[y1 - 1, x0:x1].any()
            assert m[y0:y1, x0].any() and m[y0:y1, x1 - 1].any()


def test_point_is_far_from_boundary(samples):
    # the interior point is at least as deep as the mask's centroid pixel, when that is inside
    from scipy.ndimage import distance_transform_edt

    for s in samples[:10]:
        for m, pt in zip(s.masks, s.points, strict=True):
            dist = distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
            assert dist[int(pt[1]), int(pt[0])] == dist.max()


def test_mask_box_edges():
    m = np.zeros((8, 8), dtype=bool)
    m[2:5, 3:7] = True
    assert mask_box(m) == (3, 2, 7, 5)


def test_occlusion_happens_somewhere(samples):
    # an occluded object's visible mask touches the mask of the object painted over it
    from scipy.ndimage import binary_dilation

    touching = sum(
        bool((binary_dilation(s.masks[i]) & s.masks[j]).any())
        for s in samples for i in range(len(s.labels)) for j in range(i + 1, len(s.labels))
    )
    assert touching > 0


def test_size_128_works():
    s = make_shapes_image(3, ShapesConfig(image_size=128))
    assert s.image.shape == (3, 128, 128) and s.masks.shape[1:] == (128, 128)
    assert all(m[int(p[1]), int(p[0])] for m, p in zip(s.masks, s.points, strict=True))


def test_stack_samples(samples):
    batch = stack_samples(samples[:5])
    n_obj = sum(len(s.labels) for s in samples[:5])
    assert batch.images.shape == (5, 3, 64, 64)
    assert batch.masks.shape == (n_obj, 64, 64)
    assert batch.image_index.tolist() == [i for i, s in enumerate(samples[:5]) for _ in s.labels]


def test_coco_export_round_trips_through_pycocotools(samples):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    data = to_coco(samples[:10])
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    assert sorted(coco.getImgIds()) == [s.seed for s in samples[:10]]
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {"circle", "square", "triangle"}
    for s in samples[:10]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[s.seed]))
        assert len(anns) == len(s.labels)
        for ann, m, box, lab in zip(anns, s.masks, s.boxes, s.labels, strict=True):
            assert np.array_equal(coco.annToMask(ann).astype(bool), m)
            assert ann["category_id"] == int(lab)
            assert ann["area"] == m.sum()
            x0, y0, x1, y1 = box.tolist()
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            rle = {**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()}
            assert mask_utils.decode(rle).sum() == m.sum()


def test_config_validation():
    with pytest.raises(ConfigError, match="image_size"):
        ShapesConfig(image_size=8)
    with pytest.raises(ConfigError, match="min_objects"):
        ShapesConfig(min_objects=3, max_objects=2)
    with pytest.raises(ConfigError, match="seed"):
        make_shapes_image(-1)
    assert ShapesConfig().to_dict()["image_size"] == 64
