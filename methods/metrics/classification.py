"""Classification metrics on logits, pure torch: top-1 accuracy, error, mean prediction entropy,
per-class accuracy, and a running tally for streams.

Used to score TTA on continual corruption streams (TTAQ: Xiao et al., "TTAQ: Towards Stable
Post-training Quantization in Continuous Domain Adaptation", arXiv:2412.09899; error per domain and
its mean over domains as in Hendrycks & Dietterich, arXiv:1903.12261, and CoTTA, arXiv:2203.13591).
The definitions are the standard ones; the entropy is in nats of the softmax (Tent's objective,
Wang et al., arXiv:2006.10726). Interface and the NaN convention for absent classes are our design
[inferred].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from methods.errors import ConfigError


def _check(logits: torch.Tensor, targets: torch.Tensor | None = None) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] < 1:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(f"logits must be a tensor of shape (N, C), got {shape}.")
    if targets is None:
        return
    if not isinstance(targets, torch.Tensor) or targets.shape != logits.shape[:1] \
            or targets.dtype.is_floating_point or targets.dtype == torch.bool:
        is_tensor = isinstance(targets, torch.Tensor)
        got = (tuple(targets.shape), targets.dtype) if is_tensor else type(targets).__name__
        raise ConfigError(f"targets must be integer class indices of shape ({logits.shape[0]},), got {got}.")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        raise ConfigError(
            f"targets must lie in 0..{logits.shape[1] - 1} (the logits have {logits.shape[1]} classes), "
            f"got values in {int(targets.min())}..{int(targets.max())}."
        )


def top1_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose arg-max logit is the target (ties go to the lowest index); NaN if empty."""
    _check(logits, targets)
    if targets.numel() == 0:
        return float("nan")
    return (logits.argmax(dim=1) == targets).float().mean().item()


def error_rate(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """1 - top-1 accuracy."""
    return 1.0 - top1_accuracy(logits, targets)


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) per row, shape (N,), computed stably from log-softmax."""
    _check(logits)
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def mean_prediction_entropy(logits: torch.Tensor) -> float:
    """Mean over rows of the softmax entropy (nats); 0 for one-hot confident, log C for uniform."""
    return prediction_entropy(logits).mean().item()


def per_class_accuracy(
    logits: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None
) -> torch.Tensor:
    """Accuracy of each class c over the rows whose target is c, shape (num_classes,) float;
    NaN for a class with no rows (so a mean over classes can skip it with `nanmean`)."""
    _check(logits, targets)
    num_classes = logits.shape[1] if num_classes is None else num_classes
    if num_classes < logits.shape[1]:
        raise ConfigError(f"num_classes={num_classes} is below the logits' {logits.shape[1]} classes.")
    correct = (logits.argmax(dim=1) == targets).double()
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, targets, correct)
    counts = torch.bincount(targets, minlength=num_classes).double()
    return torch.where(counts > 0, hits / counts.clamp_min(1), torch.full_like(counts, float("nan")))


@dataclass
class RunningAccuracy:
    """Counts over a stream of batches: overall and per-class correct/total, and the entropy sum.

    `update(logits, targets)` adds one batch; the properties read the totals so far."""

    num_classes: int
    correct: int = 0
    total: int = 0
    entropy_sum: float = 0.0
    class_correct: torch.Tensor = field(init=False)
    class_total: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        n = self.num_classes
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {self.num_classes!r}.")
        self.class_correct = torch.zeros(self.num_classes, dtype=torch.int64)
        self.class_total = torch.zeros(self.num_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        _check(logits, targets)
        if logits.shape[1] != self.num_classes:
            raise ConfigError(f"logits have {logits.shape[1]} classes, this tally counts {self.num_classes}.")
        hit = (logits.detach().argmax(dim=1) == targets).long()
        self.correct += int(hit.sum())
        self.total += int(targets.numel())
        self.entropy_sum += float(prediction_entropy(logits.detach()).sum())
        self.class_correct.index_add_(0, targets, hit)
        self.class_total += torch.bincount(targets, minlength=self.num_classes)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy

    @property
    def mean_entropy(self) -> float:
        return self.entropy_sum / self.total if self.total else float("nan")

    @property
    def per_class(self) -> torch.Tensor:
        total = self.class_total.double()
        acc = self.class_correct.double() / total.clamp_min(1)
        return torch.where(total > 0, acc, torch.full_like(acc, float("nan")))
