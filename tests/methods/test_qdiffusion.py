"""Q-Diffusion-style baseline: split shortcut quantization and timestep-aware calibration."""

from __future__ import annotations

import pytest
import torch
from tiny_diffusion import tiny_scheduler, tiny_unet

from methods.errors import ConfigError
from methods.qdiffusion import (
    QDiffusionConfig,
    SplitActQuant,
    find_concat_splits,
    qdiffusion_quantize,
    timestep_calibration_set,
)
from methods.quant import check_ready_for_eval
from methods.quant.modules import act_quantizer


def test_concat_splits_match_the_up_block_inputs():
    unet = tiny_unet()
    splits = find_concat_splits(unet, torch.randn(1, 1, 8, 8), 500)
    # up block 0 gets the 32-channel deep feature, its 2nd resnet the 32-channel output of the first;
    # up block 1 gets the 32-channel upsampled feature, then 16 channels
    assert splits == {
        "up_blocks.0.resnets.0.conv_shortcut": 32,
        "up_blocks.0.resnets.1.conv_shortcut": 32,
        "up_blocks.1.resnets.0.conv_shortcut": 32,
        "up_blocks.1.resnets.1.conv_shortcut": 16,
    }
    for name, split in splits.items():
        assert split < unet.get_submodule(name).in_channels


def _calibrated(q, x):
    q.start_observing()
    q(x)
    q.finish_observing()
    return q


def test_split_quantizer_beats_one_range_on_mixed_scale_concat():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat(
        [50 * torch.randn(2, 4, 6, 6, generator=gen), 0.1 * torch.randn(2, 4, 6, 6, generator=gen)], 1
    )
    joint = _calibrated(act_quantizer(8, False, "minmax", 2.0), x)
    split = SplitActQuant(4, act_quantizer(8, False, "minmax", 2.0), act_quantizer(8, False, "minmax", 2.0))
    for child in (split.qa, split.qb):
        child.start_observing()
    split.enabled = False  # calibration runs with activations off: children must still observe
    split(x)
    for child in (split.qa, split.qb):
        child.finish_observing()
    split.enabled, split.calibrated = True, True
    small = slice(4, 8)
    assert (split(x) - x)[:, small].abs().mean() < 0.1 * (joint(x) - x)[:, small].abs().mean()
    with pytest.raises(ConfigError):
        split(x[:, :4])


def test_timestep_calibration_set_spans_the_trajectory():
    calib = timestep_calibration_set(tiny_unet(), tiny_scheduler(), torch.randn(2, 1, 8, 8), 10, 4)
    ts = [int(t) for _, t in calib]
    assert len(calib) == 4 and ts == sorted(ts, reverse=True) and ts[0] >= 900 and ts[-1] <= 100
    with pytest.raises(ConfigError):
        timestep_calibration_set(tiny_unet(), tiny_scheduler(), torch.randn(2, 1, 8, 8), 3, 4)


def test_qdiffusion_quantize_ready_and_close_at_w8a8():
    unet, sched = tiny_unet(), tiny_scheduler()
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    q8 = qdiffusion_quantize(unet, sched, 6, QDiffusionConfig(w_bits=8, a_bits=8, cali_st=3, cali_n=4), noise)
    q4 = qdiffusion_quantize(unet, sched, 6, QDiffusionConfig(w_bits=4, a_bits=8, cali_st=3, cali_n=4), noise)
    check_ready_for_eval(q8)
    assert any(isinstance(m, SplitActQuant) for m in q8.modules())
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        ref, e8, e4 = unet(x, 300).sample, q8(x, 300).sample, q4(x, 300).sample
    assert 0 < (e8 - ref).pow(2).mean() < (e4 - ref).pow(2).mean()
