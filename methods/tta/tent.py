"""Tent: fully test-time adaptation by entropy minimisation of the BatchNorm affine parameters.

Wang et al., "Tent: Fully Test-Time Adaptation by Entropy Minimization" (ICLR 2021,
arXiv:2006.10726); official code `DequanWang/tent` (`tent.py`). Follows the official code: BN
normalises with test-batch statistics, only the BN affine parameters are trained, one SGD step
(momentum 0.9) per test batch on the mean softmax entropy of that batch, and the batch is scored
with the outputs of the same forward pass that computed the loss (before the step). The learning
rate default 1e-3 is the TTAQ tiny-scale plan's (reference/quant.md § 9.4; Tent uses 2.5e-4 with
batch 64 on ImageNet-C and 1e-3 on CIFAR). With `logit_adjust` (TTAQ's adaptive balanced loss) the
entropy is taken of the adjusted logits, while the reported prediction uses the raw logits [inferred,
the logit-adjustment convention].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from methods.errors import ConfigError
from methods.tta.base import TTAConfig, TTAMethod, entropy, register_tta


@dataclass(frozen=True)
class TentConfig(TTAConfig):
    """SGD on BN affine: `lr`, `momentum`; `steps` updates per batch (Tent: 1)."""

    lr: float = 1e-3
    momentum: float = 0.9
    steps: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {self.steps!r}.")

    @classmethod
    def search_space(cls) -> dict[str, tuple]:
        return {"lr": ("float", 1e-5, 1e-2, "log"), "momentum": ("float", 0.0, 0.99)}


@register_tta("tent", TentConfig, "entropy minimisation of BN affine parameters (Tent)")
class Tent(TTAMethod):
    def __init__(self, model, config: TentConfig, logit_adjust=None, seed: int = 0) -> None:
        super().__init__(model, config, logit_adjust, seed)
        self.opt = torch.optim.SGD(self.params, lr=config.lr, momentum=config.momentum)

    def _adapt(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.config.steps):
            logits = self.forward(x)
            loss = entropy(self.adjusted(logits)).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return logits.detach()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.opt.load_state_dict(state["opt"])
