"""Real-checkpoint loaders: tiny diffusers folders and timm files written here, good and broken."""
from __future__ import annotations

import json
import os

import pytest
import torch

from methods.errors import CheckpointError, ConfigError
from sims.zoo.checkpoints import load_diffusers_unet, load_timm_checkpoint

TINY_UNET = {
    "sample_size": 8, "in_channels": 1, "out_channels": 1, "layers_per_block": 1,
    "block_out_channels": (8, 16), "down_block_types": ("DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D"), "norm_num_groups": 4,
}
TINY_VIT = {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2, "in_chans": 1}


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**TINY_UNET)
    folder = tmp_path_factory.mktemp("pipe") / "ddpm"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(folder)
    return folder, unet


def test_pipeline_folder_loads_unet_and_scheduler(tiny_pipeline):
    folder, unet = tiny_pipeline
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    ckpt = load_diffusers_unet(folder)
    assert ckpt.unet_class == "UNet2DModel" and not ckpt.unet.training
    assert type(ckpt.scheduler).__name__ == "DDPMScheduler"
    assert ckpt.scheduler.config.num_train_timesteps == 50
    for k, v in unet.state_dict().items():
        assert torch.equal(ckpt.unet.state_dict()[k], v)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_unet_subfolder_and_scheduler_kind(tiny_pipeline):
    folder, _ = tiny_pipeline
    ckpt = load_diffusers_unet(folder / "unet", scheduler_kind="ddim")
    assert type(ckpt.scheduler).__name__ == "DDIMScheduler"  # sibling scheduler/ found, class rebuilt
    assert ckpt.scheduler_dir == folder / "scheduler"
    with pytest.raises(ConfigError, match="scheduler kind"):
        load_diffusers_unet(folder, scheduler_kind="euler")


def test_bin_weights_load_with_weights_only(tiny_pipeline, tmp_path):
    _, unet = tiny_pipeline
    unet.save_pretrained(tmp_path / "unet", safe_serialization=False)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.bin").is_file()
    ckpt = load_diffusers_unet(tmp_path / "unet")
    assert ckpt.scheduler is None  # a bare U-Net folder has no scheduler
    assert torch.equal(next(iter(ckpt.unet.state_dict().values())), next(iter(unet.state_dict().values())))


def test_missing_path_and_wrong_layout_name_the_expected_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"model_index\.json.*does not exist"):
        load_diffusers_unet(tmp_path / "nowhere")
    (tmp_path / "vae").mkdir()
    with pytest.raises(CheckpointError, match=r"unet/config\.json"):
        load_diffusers_unet(tmp_path)


def test_missing_weights_file(tiny_pipeline, tmp_path):
    _, unet = tiny_pipeline
    unet.save_pretrained(tmp_path / "unet")
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model\.safetensors"):
        load_diffusers_unet(tmp_path)


def test_corrupted_unet_weights(tiny_pipeline, tmp_path):
    _, unet = tiny_pipeline
    unet.save_pretrained(tmp_path / "unet")
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated download
    with pytest.raises(CheckpointError, match="corrupted"):
        load_diffusers_unet(tmp_path)


def test_weights_that_do_not_match_config(tiny_pipeline, tmp_path):
    _, unet = tiny_pipeline
    unet.save_pretrained(tmp_path / "unet")
    cfg_path = tmp_path / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["block_out_channels"] = [8, 32]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match config.json"):
        load_diffusers_unet(tmp_path)


def test_non_unet_config_is_rejected(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(CheckpointError, match="AutoencoderKL"):
        load_diffusers_unet(tmp_path)


@pytest.fixture(scope="module")
def tiny_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7, **TINY_VIT)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_checkpoint_round_trip_infers_head(tiny_vit, tmp_path, suffix):
    from safetensors.torch import save_file

    path = tmp_path / f"model{suffix}"
    state = tiny_vit.state_dict()
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:  # a training-script container with a DDP prefix
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    model = load_timm_checkpoint(path, "vit_tiny_patch16_224", **TINY_VIT)
    assert model.num_classes == 7 and not model.training
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(model(x), tiny_vit.eval()(x))


def test_timm_errors(tiny_vit, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(ConfigError, match="Unknown timm architecture"):
        load_timm_checkpoint(tmp_path / "m.pth", "vit_tiny_patch16_2244")
    with pytest.raises(CheckpointError, match="does not exist.*pretrained=True"):
        load_timm_checkpoint(tmp_path / "m.safetensors", "vit_tiny_patch16_224")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupted"):
        load_timm_checkpoint(bad, "vit_tiny_patch16_224")
    bad_pth = tmp_path / "bad.pth"
    bad_pth.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_timm_checkpoint(bad_pth, "vit_tiny_patch16_224")
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_vit.state_dict().items()}, str(good))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_timm_checkpoint(good, "vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32,
                             depth=1, num_heads=2, in_chans=1)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_timm_checkpoint(good, "vit_tiny_patch16_224", num_classes=3, **TINY_VIT)


def test_timm_pickled_object_is_refused(tmp_path):
    path = tmp_path / "obj.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "cfg": _Opaque()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_timm_checkpoint(path, "vit_tiny_patch16_224")


class _Opaque:
    """A custom class that torch.load(weights_only=True) must refuse to unpickle."""


def test_missing_and_unexpected_unet_keys_are_not_silently_initialised(tiny_pipeline, tmp_path):
    # Regression: diffusers only warns and randomly initialises missing keys.
    from safetensors.torch import load_file, save_file

    _, unet = tiny_pipeline
    unet.save_pretrained(tmp_path / "unet")
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    del state["conv_in.bias"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"missing_keys: \['conv_in.bias'\]"):
        load_diffusers_unet(tmp_path)
