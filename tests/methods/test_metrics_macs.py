"""MAC counts from FlopCounterMode against hand-computed numbers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from methods.errors import ConfigError
from methods.metrics.macs import count_macs


def test_linear_macs_by_hand() -> None:
    # batch 5, 7 → 3: 5·7·3 multiply-accumulates, with or without bias
    assert count_macs(nn.Linear(7, 3), torch.zeros(5, 7)).total == 105
    assert count_macs(nn.Linear(7, 3, bias=False), torch.zeros(5, 7)).total == 105
    # tokens (2, 4, 7): 2·4·7·3
    assert count_macs(nn.Linear(7, 3), torch.zeros(2, 4, 7)).total == 168


@pytest.mark.parametrize(
    "conv, size, out_hw",
    [
        (nn.Conv2d(3, 8, 3, padding=1), 16, 16),
        (nn.Conv2d(3, 8, 3, stride=2), 16, 7),
        (nn.Conv2d(4, 8, 5, padding=2, groups=2), 12, 12),
        (nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), 10, 10),
    ],
)
def test_conv2d_macs_by_hand(conv: nn.Conv2d, size: int, out_hw: int) -> None:
    batch = 2
    kh, kw = conv.kernel_size
    expected = batch * conv.out_channels * out_hw * out_hw * (conv.in_channels // conv.groups) * kh * kw
    report = count_macs(conv, torch.zeros(batch, conv.in_channels, size, size))
    assert report.total == expected
    assert report.by_op == {"convolution": expected}


def test_per_module_breakdown_and_training_flags_restored() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Sequential(nn.Linear(4 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10)),
    )
    model.train()
    running_mean = model[1].running_mean.clone()
    report = count_macs(model, torch.randn(3, 1, 8, 8))
    conv, fc1, fc2 = 3 * 4 * 8 * 8 * 9, 3 * 256 * 16, 3 * 16 * 10
    assert report.total == conv + fc1 + fc2
    assert report.by_module == {"": conv + fc1 + fc2, "0": conv, "4": fc1 + fc2, "4.0": fc1, "4.2": fc2}
    assert report.leaf_modules() == {"0": conv, "4.0": fc1, "4.2": fc2}
    assert report.by_op == {"convolution": conv, "addmm": fc1 + fc2}
    assert all(m.training for m in model.modules())
    torch.testing.assert_close(model[1].running_mean, running_mean)  # counting did not update BN stats


def test_multiple_inputs_and_bad_calls() -> None:
    class Bilinear(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            return scale * (a @ b)

    assert count_macs(Bilinear(), (torch.zeros(2, 3), torch.zeros(3, 4)), scale=2.0).total == 24
    with pytest.raises(ConfigError, match="nn.Module"):
        count_macs(lambda x: x, torch.zeros(1))
    with pytest.raises(ConfigError, match="keyword"):
        count_macs(Bilinear(), {"a": torch.zeros(1)})
