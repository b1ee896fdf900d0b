"""Classification metrics: hand-checked values, edge cases, typed errors, running tally = batch metrics."""
from __future__ import annotations

import math

import pytest
import torch

from methods.errors import ConfigError
from methods.metrics.classification import (
    RunningAccuracy,
    error_rate,
    mean_prediction_entropy,
    per_class_accuracy,
    prediction_entropy,
    top1_accuracy,
)


def _logits_for(preds: list[int], num_classes: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(preds), num_classes).float() * 5.0


def test_top1_and_error_by_hand() -> None:
    logits = _logits_for([0, 1, 2, 2])
    targets = torch.tensor([0, 1, 1, 2])
    assert top1_accuracy(logits, targets) == pytest.approx(0.75)
    assert error_rate(logits, targets) == pytest.approx(0.25)
    # ties go to the lowest index (torch.argmax), a documented convention
    assert top1_accuracy(torch.zeros(2, 3), torch.tensor([0, 1])) == pytest.approx(0.5)
    assert math.isnan(top1_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)))


def test_entropy_is_zero_for_certain_and_log_c_for_uniform() -> None:
    assert mean_prediction_entropy(torch.zeros(4, 10)) == pytest.approx(math.log(10), abs=1e-6)
    assert mean_prediction_entropy(torch.tensor([[1000.0, 0.0, 0.0]])) == pytest.approx(0.0, abs=1e-6)
    p = torch.tensor([0.5, 0.25, 0.25])
    h = prediction_entropy(p.log().unsqueeze(0))
    assert h.shape == (1,) and h.item() == pytest.approx(-(p * p.log()).sum().item(), abs=1e-6)
    assert torch.isfinite(prediction_entropy(torch.tensor([[1e4, -1e4, 0.0]]))).all()


def test_per_class_accuracy_with_absent_class() -> None:
    logits = _logits_for([0, 0, 1, 1], num_classes=4)
    targets = torch.tensor([0, 1, 1, 1])
    acc = per_class_accuracy(logits, targets)
    assert acc[0].item() == 1.0 and acc[1].item() == pytest.approx(2 / 3)
    assert torch.isnan(acc[2]) and torch.isnan(acc[3])
    assert per_class_accuracy(logits, targets, num_classes=6).shape == (6,)


def test_running_tally_matches_whole_set_metrics() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(100, 5, generator=gen)
    targets = torch.randint(0, 5, (100,), generator=gen)
    tally = RunningAccuracy(num_classes=5)
    assert math.isnan(tally.accuracy)
    for start in range(0, 100, 32):
        tally.update(logits[start:start + 32], targets[start:start + 32])
    assert tally.total == 100
    assert tally.accuracy == pytest.approx(top1_accuracy(logits, targets))
    assert tally.error == pytest.approx(error_rate(logits, targets))
    assert tally.mean_entropy == pytest.approx(mean_prediction_entropy(logits), rel=1e-5)
    torch.testing.assert_close(tally.per_class, per_class_accuracy(logits, targets))


def test_bad_inputs_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"\(N, C\)"):
        top1_accuracy(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="integer class indices"):
        top1_accuracy(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ConfigError, match="integer class indices"):
        top1_accuracy(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"0\.\.1"):
        top1_accuracy(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ConfigError, match="num_classes"):
        per_class_accuracy(torch.zeros(2, 3), torch.tensor([0, 1]), num_classes=2)
    with pytest.raises(ConfigError, match="positive integer"):
        RunningAccuracy(num_classes=0)
    with pytest.raises(ConfigError, match="this tally counts 3"):
        RunningAccuracy(num_classes=3).update(torch.zeros(2, 4), torch.tensor([0, 1]))
