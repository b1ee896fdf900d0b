"""Tests of the real-SAM `.pth` loader: error paths on tiny files, happy path with a tiny builder."""
from __future__ import annotations

import pytest
import torch

from methods.errors import CheckpointError, UnknownNameError
from sims.zoo.sam_checkpoint import (
    OFFICIAL_FILES,
    _default_builders,
    guess_variant,
    load_sam_checkpoint,
    read_sam_state_dict,
)
from sims.zoo.sam_shapes import SamShapesConfig, build_sam_shapes


class NotATensor:
    """A pickled custom object: `weights_only=True` must refuse it."""


def _tiny_builders(config=None):
    # stands in for segment_anything's 90M+ parameter builders in tests
    return {"vit_b": lambda checkpoint=None: build_sam_shapes(config)}


@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(1)
    return build_sam_shapes().state_dict()


def test_happy_path_loads_every_tensor(tmp_path, tiny_state):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_state, path)
    model = load_sam_checkpoint(path, "vit_b", builders=_tiny_builders())
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, tiny_state[key]), key


def test_wrapped_state_dict_is_unwrapped(tmp_path, tiny_state):
    path = tmp_path / "wrapped.pth"
    torch.save({"model": tiny_state, "epoch": 3}, path)
    model = load_sam_checkpoint(path, "vit_b", builders=_tiny_builders())
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(model.state_dict()[key], tiny_state[key])


def test_missing_file_names_file_variant_and_source(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_sam_checkpoint(tmp_path / "nope.pth", "vit_l", builders=_tiny_builders())
    msg = str(err.value)
    assert "nope.pth" in msg and "vit_l" in msg and OFFICIAL_FILES["vit_l"] in msg


def test_corrupted_file(tmp_path):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    path.write_bytes(b"\x00garbage, not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupted") as err:
        load_sam_checkpoint(path, "vit_b", builders=_tiny_builders())
    assert "sam_vit_b_01ec64.pth" in str(err.value)


def test_truncated_checkpoint(tmp_path, tiny_state):
    path = tmp_path / "truncated.pth"
    torch.save(tiny_state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_sam_checkpoint(path, "vit_b", builders=_tiny_builders())


def test_pickled_object_is_refused_not_executed(tmp_path):
    path = tmp_path / "object.pth"
    torch.save({"weights": NotATensor()}, path)
    with pytest.raises(CheckpointError):
        read_sam_state_dict(path, "vit_b")


def test_non_state_dict_is_rejected(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_sam_state_dict(path, "vit_b")


def test_wrong_shapes_are_reported(tmp_path):
    torch.manual_seed(0)
    other = build_sam_shapes(SamShapesConfig(prompt_dim=32, decoder_mlp_dim=128)).state_dict()
    path = tmp_path / "other.pth"
    torch.save(other, path)
    with pytest.raises(CheckpointError, match="shape mismatches") as err:
        load_sam_checkpoint(path, "vit_b", builders=_tiny_builders())
    assert "vit_b" in str(err.value) and OFFICIAL_FILES["vit_b"] in str(err.value)


def test_other_variant_is_named(tmp_path):
    # a (tiny) state dict whose patch embedding has ViT-L's width
    path = tmp_path / "looks_like_vit_l.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 1, 1)}, path)
    with pytest.raises(CheckpointError, match="variant='vit_l'"):
        load_sam_checkpoint(path, "vit_b", builders=_tiny_builders())
    assert guess_variant({"image_encoder.patch_embed.proj.weight": torch.zeros(1280, 1)}) == "vit_h"
    assert guess_variant({}) is None


def test_unknown_variant_suggests_closest(tmp_path):
    with pytest.raises(UnknownNameError, match="vit_b"):
        load_sam_checkpoint(tmp_path / "x.pth", "vit_bb")


def test_default_registry_has_every_variant():
    builders = _default_builders()
    assert set(OFFICIAL_FILES) <= set(builders)
