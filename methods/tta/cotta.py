"""CoTTA-style continual adaptation: EMA teacher, augmentation-averaged pseudo-labels, stochastic restore.

Wang et al., "Continual Test-Time Domain Adaptation" (CVPR 2022, arXiv:2203.13591); official code
`qinenergy/cotta` (`cotta.py`). Follows the official code in: a teacher that is an exponential
moving average of the student (`mt` = 0.999); the teacher's prediction on the test batch, replaced
by the mean over `n_aug` augmented copies when the source (anchor) model's mean max-probability is
below `ap` (0.92 in the CIFAR-10 config); the student loss is the cross-entropy of the student's
softmax against the teacher's soft prediction; after each step every trainable element is reset to
its source value with probability `rst` (0.01); the batch is scored with the teacher's prediction.

Our design [inferred]: only the BN affine parameters are trained (TTAQ's setting: the quantized
convolutions stay fixed; CoTTA itself trains all parameters), BN normalises with test-batch
statistics in student, teacher and anchor, and the augmentations are tensor-level ones that also
work for 1-channel 16 px digits (random shift by up to 2 px, brightness/contrast jitter, Gaussian
noise σ ≤ 0.05, horizontal flip only for ≥ 3-channel images) — the official code uses torchvision
colour jitter, affine, blur, noise and flip on 32 px CIFAR. `n_aug` defaults to 4 (official: 32).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from methods.errors import ConfigError
from methods.tta.base import TTAConfig, TTAMethod, clone_frozen, register_tta


@dataclass(frozen=True)
class CoTTAConfig(TTAConfig):
    lr: float = 1e-3
    momentum: float = 0.9
    mt: float = 0.999
    rst: float = 0.01
    ap: float = 0.92
    n_aug: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}.")
        for key in ("momentum", "mt", "rst", "ap"):
            if not 0.0 <= float(getattr(self, key)) <= 1.0:
                raise ConfigError(f"{key} must be in [0, 1], got {getattr(self, key)!r}.")
        if isinstance(self.n_aug, bool) or not isinstance(self.n_aug, int) or self.n_aug < 1:
            raise ConfigError(f"n_aug must be a positive integer, got {self.n_aug!r}.")

    @classmethod
    def search_space(cls) -> dict[str, tuple]:
        return {"lr": ("float", 1e-5, 1e-2, "log"), "mt": ("float", 0.9, 0.9999), "rst": ("float", 0.0, 0.1),
                "ap": ("float", 0.5, 1.0)}


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random augmented copy of a batch in [0, 1] (see module docstring)."""
    b = x.shape[0]
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    out = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    gain = 1.0 + 0.4 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    shift = 0.2 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * gain + mean + shift
    out = out + 0.05 * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(out.shape, generator=gen)
    if x.shape[1] >= 3 and bool(torch.rand(1, generator=gen) < 0.5):
        out = out.flip(-1)
    return out.clamp(0.0, 1.0)


@register_tta("cotta", CoTTAConfig, "EMA teacher + augmentation-averaged pseudo-labels + stochastic restore")
class CoTTA(TTAMethod):
    def __init__(self, model, config: CoTTAConfig, logit_adjust=None, seed: int = 0) -> None:
        super().__init__(model, config, logit_adjust, seed)
        self.opt = torch.optim.SGD(self.params, lr=config.lr, momentum=config.momentum)
        self.anchor = clone_frozen(model)
        self.teacher = clone_frozen(model)
        self.source = [p.detach().clone() for p in self.params]
        names = {id(p): n for n, p in model.named_parameters()}
        teacher_params = dict(self.teacher.named_parameters())
        self.teacher_params = [teacher_params[names[id(p)]] for p in self.params]

    @torch.no_grad()
    def _teacher_prob(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        prob = F.softmax(self.forward(x, self.teacher), 1)
        anchor_conf = F.softmax(self.forward(x, self.anchor), 1).max(1).values.mean()
        if float(anchor_conf) < cfg.ap:
            augs = [F.softmax(self.forward(augment(x, self.gen), self.teacher), 1) for _ in range(cfg.n_aug)]
            prob = torch.stack(augs).mean(0)
        return prob

    def _adapt(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        teacher_prob = self._teacher_prob(x)
        student = self.adjusted(self.forward(x))
        loss = -(teacher_prob * F.log_softmax(student, 1)).sum(1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            for t, s in zip(self.teacher_params, self.params, strict=True):
                t.mul_(cfg.mt).add_(s.detach(), alpha=1 - cfg.mt)
            if cfg.rst > 0:
                for p, src in zip(self.params, self.source, strict=True):
                    keep = (torch.rand(p.shape, generator=self.gen) >= cfg.rst).float()
                    p.copy_(p * keep + src * (1 - keep))
        return teacher_prob.log()  # scored with the teacher (log-probabilities rank like logits)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "opt": self.opt.state_dict(),
                "teacher": [t.detach().clone() for t in self.teacher_params]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.opt.load_state_dict(state["opt"])
        with torch.no_grad():
            for t, v in zip(self.teacher_params, state["teacher"], strict=True):
                t.copy_(v)
