"""Tests of the `sam-shapes` zoo model: decoder batching, committed weights, card, bad files."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from methods.errors import CheckpointError
from methods.metrics.masks import mask_iou
from sims.data.shapes import make_shapes_dataset, stack_samples
from sims.zoo.registry import WEIGHTS_DIR, ZOO, load_zoo_model, read_card
from sims.zoo.sam_shapes import (
    NAME,
    SUBSET_IMAGES,
    TEST_FIRST_SEED,
    SamShapesConfig,
    SamShapesRecipe,
    build_sam_shapes,
    decode_masks,
    encode_prompts,
    evaluate,
    fit,
    predict,
)


@pytest.fixture(scope="module")
def model():
    return load_zoo_model(NAME)


@pytest.fixture(scope="module")
def card():
    return read_card(NAME)


def test_registered_with_headline_metric():
    spec = ZOO.get(NAME)
    assert spec.metric == "box_iou" and spec.evaluate is evaluate


def test_decode_masks_equals_segment_anything_decoder():
    torch.manual_seed(0)
    sam = build_sam_shapes().eval()
    dim, grid = sam.prompt_encoder.embed_dim, sam.prompt_encoder.image_embedding_size
    emb = torch.randn(1, dim, *grid)
    boxes = torch.tensor([[3.0, 4.0, 30.0, 40.0], [10.0, 12.0, 50.0, 60.0]])
    points = torch.tensor([[5.0, 6.0], [20.0, 30.0]])
    pe = sam.prompt_encoder.get_dense_pe()
    with torch.no_grad():
        for use_box in (True, False):
            if use_box:
                sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
            else:
                pts = (points[:, None], torch.ones(2, 1))
                sparse, dense = sam.prompt_encoder(points=pts, boxes=None, masks=None)
            ref_multi, ref_iou = sam.mask_decoder(emb, pe, sparse, dense, multimask_output=True)
            ref_single, _ = sam.mask_decoder(emb, pe, sparse, dense, multimask_output=False)
            sp, de = encode_prompts(sam, boxes, points, torch.full((2,), use_box))
            masks, iou = decode_masks(sam, emb.expand(2, -1, -1, -1), sp, de)
            assert torch.allclose(masks[:, 1:], ref_multi, atol=1e-5)
            assert torch.allclose(masks[:, :1], ref_single, atol=1e-5)
            assert torch.allclose(iou[:, 1:], ref_iou, atol=1e-5)


def test_fit_is_deterministic():
    recipe = SamShapesRecipe(steps=2, images_per_step=2, train_images=4, warmup_steps=1)
    a, la = fit(recipe, SamShapesConfig(), seed=3)
    b, lb = fit(recipe, SamShapesConfig(), seed=3)
    assert la == lb
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_committed_files_exist_and_card_is_complete(card):
    for suffix in (".safetensors", ".json", ".md", "-overlay.png"):
        path = WEIGHTS_DIR / f"{NAME}{suffix}"
        assert path.is_file(), path
    assert (WEIGHTS_DIR / f"{NAME}.safetensors").stat().st_size < 5_000_000
    keys = ("data", "steps", "seed", "wall_time_s", "cpu_time_s", "box_iou", "point_iou", "mask_ap", "params")
    for key in keys:
        assert key in card, key
    assert card["params"] < 1_000_000
    assert card["data"]["test_seeds"][0] > card["data"]["train_seeds"][1]  # held-out seeds are disjoint


def test_weights_reproduce_card_box_iou_on_subset(model, card):
    got = evaluate(model, n_images=SUBSET_IMAGES)
    want = card["test_subset"]
    assert got["n_objects"] == want["n_objects"]
    assert got["box_iou"] == pytest.approx(want["box_iou"], abs=0.01)
    assert got["point_iou"] == pytest.approx(want["point_iou"], abs=0.01)
    assert got["box_iou"] > 0.5  # a trained model, far above an untrained one (about 0.05)


def test_sam_forward_agrees_with_batched_predict(model):
    sample = make_shapes_dataset(1, TEST_FIRST_SEED + 5)[0]
    data = stack_samples([sample])
    n = len(sample.labels)
    batched = [{"image": data.images[0], "original_size": (64, 64), "boxes": data.boxes}]
    out = model(batched, multimask_output=False)[0]["masks"][:, 0]
    with torch.no_grad():
        flag = torch.ones(n, dtype=torch.bool)
        logits, _ = predict(model, data.images, data.image_index, data.boxes, data.points, flag)
    ours = logits[:, 0] > 0
    assert mask_iou(out, ours).min() > 0.99


def test_corrupted_weights_raise_checkpoint_error(tmp_path):
    shutil.copy(WEIGHTS_DIR / f"{NAME}.json", tmp_path)
    (tmp_path / f"{NAME}.safetensors").write_bytes(b"\x13\x00corrupt" * 64)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_zoo_model(NAME, tmp_path)


def test_weights_of_another_architecture_raise_checkpoint_error(tmp_path):
    from sims.zoo.registry import save_zoo_weights

    torch.manual_seed(0)
    save_zoo_weights(NAME, build_sam_shapes(SamShapesConfig(prompt_dim=32, decoder_mlp_dim=128)), tmp_path)
    with pytest.raises(CheckpointError, match="do not match"):
        load_zoo_model(NAME, tmp_path)


def test_missing_weights_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_zoo_model(NAME, tmp_path)
    assert json.loads((WEIGHTS_DIR / f"{NAME}.json").read_text())["name"] == NAME


def test_recipe_validation():
    from methods.errors import ConfigError

    with pytest.raises(ConfigError, match="steps"):
        SamShapesRecipe(steps=0)
    with pytest.raises(ConfigError, match="train_images"):
        SamShapesRecipe(train_images=4, images_per_step=8)
    with pytest.raises(ConfigError, match="box_fraction"):
        SamShapesRecipe(box_fraction=1.5)


@pytest.mark.slow
def test_train_writes_weights_card_and_overlay(tmp_path):
    from sims.zoo.sam_shapes import train

    recipe = SamShapesRecipe(steps=3, images_per_step=2, train_images=4, test_images=4, warmup_steps=1)
    seen = []
    card = train(tmp_path, seed=0, recipe=recipe, progress=lambda step, loss: seen.append(step))
    assert seen == [1, 2, 3]
    for suffix in (".safetensors", ".json", ".md", "-overlay.png"):
        assert (tmp_path / f"{NAME}{suffix}").is_file()
    assert read_card(NAME, tmp_path)["box_iou"] == card["box_iou"]
    reloaded = evaluate(load_zoo_model(NAME, tmp_path), n_images=4)
    assert reloaded["box_iou"] == pytest.approx(card["box_iou"], abs=1e-6)
