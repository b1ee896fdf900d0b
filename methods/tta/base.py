"""Shared pieces of the test-time-adaptation (TTA) methods: the registry entry type, BatchNorm
re-normalisation with test-batch statistics, and the "only BN affine is trainable" set-up.

Papers: BN-statistics adaptation follows Schneider et al., "Improving robustness against common
corruptions by covariate shift adaptation" (NeurIPS 2020, arXiv:2006.16971) — normalise with a
mix of source and test-batch statistics, source weight N/(N+n) — and Nado et al. (arXiv:2006.10963)
for the pure test-batch case (source weight 0); Tent (Wang et al., ICLR 2021, arXiv:2006.10726) also
normalises with test-batch statistics and trains only the BN affine parameters.
TTAQ (Xiao et al., "TTAQ: Towards Stable Post-training Quantization in Continuous Domain
Adaptation", arXiv:2412.09899) runs such methods on top of a PTQ model; reference/quant.md § 5.2.

Our design [inferred]:
- Re-normalisation is a forward hook on every `BatchNorm2d`/`BatchNorm1d` that replaces the
  module's output by `(x - mu) / sqrt(var + eps) * weight + bias` with
  `mu = w * running_mean + (1 - w) * batch_mean` (same for var). The module itself, its running
  (source) statistics and the state-dict keys are untouched, so the hook works inside a
  fake-quantized model and a checkpoint is just the affine parameters.
- In a quantized model the BN layers are not wrapped by `quantize_` (they stay full-precision
  modules between quantized convolutions); `prepare_bn_affine` makes their weight/bias the only
  parameters with `requires_grad`, float32, and freezes everything else (weights, AdaRound
  variables, LSQ steps) — the quantized layers are never changed by adaptation.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from methods.config_dict import ConfigDict
from methods.errors import ConfigError
from methods.registry import Registry

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)
LogitAdjust = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TTAConfig(ConfigDict):
    """Fields every TTA method shares.

    Args:
        source_weight: weight of the source (running) BN statistics in the normalisation; 0 uses the
            test batch alone (Tent, Nado et al.), N/(N+n) is Schneider et al.'s prior.
    """

    source_weight: float = 0.0
    version: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.source_weight) <= 1.0:
            raise ConfigError(f"source_weight must be in [0, 1], got {self.source_weight!r}.")
        if self.version != 1:
            raise ConfigError(
                f"{type(self).__name__} version {self.version!r} is unknown; this code reads 1."
            )



    @classmethod
    def search_space(cls) -> dict[str, tuple]:
        return {"source_weight": ("float", 0.0, 1.0)}


def bn_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BN_TYPES)]


def prepare_bn_affine(model: nn.Module) -> list[nn.Parameter]:
    """Freeze every parameter except the BN affine ones; return those (float32, trainable).

    Raises ConfigError when the model has no affine BatchNorm (nothing a Tent-style method can adapt)."""
    for p in model.parameters():
        p.requires_grad_(False)
    params: list[nn.Parameter] = []
    for _, m in bn_modules(model):
        for p in (m.weight, m.bias):
            if p is not None:
                if p.dtype != torch.float32:
                    p.data = p.data.float()
                p.requires_grad_(True)
                params.append(p)
    if not params:
        raise ConfigError(
            "The model has no affine BatchNorm layers; BN-statistics adaptation, Tent and CoTTA adapt "
            "those. Use a model with BatchNorm (e.g. zoo 'cnn-bn-digits', a ResNet)."
        )
    return params


def _renorm_hook(source_weight: float):
    def hook(m: nn.Module, args: tuple, _out: torch.Tensor) -> torch.Tensor:
        x = args[0]
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        mu_b = x.mean(dims)
        var_b = x.var(dims, unbiased=False)
        if source_weight > 0 and m.running_mean is not None:
            w = source_weight
            mu = w * m.running_mean + (1 - w) * mu_b
            var = w * m.running_var + (1 - w) * var_b  # linear mix, as in Schneider et al.
        else:
            mu, var = mu_b, var_b
        y = (x - mu.reshape(shape)) * torch.rsqrt(var.reshape(shape) + m.eps)
        if m.weight is not None:
            y = y * m.weight.reshape(shape) + m.bias.reshape(shape)
        return y

    return hook


class BatchStatsNorm:
    """Context manager: every BN layer of `model` normalises with (mixed) test-batch statistics."""

    def __init__(self, model: nn.Module, source_weight: float = 0.0) -> None:
        self.model, self.source_weight = model, float(source_weight)
        self.handles: list[Any] = []

    def __enter__(self) -> nn.Module:
        hook = _renorm_hook(self.source_weight)
        self.handles = [m.register_forward_hook(hook) for _, m in bn_modules(self.model)]
        return self.model

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(
            f"A TTA step needs a batch of at least 2 inputs (test-batch statistics), got {got}."
        )


class TTAMethod:
    """Base class: adapts `model` in place, batch by batch.

    `adapt(x) -> logits` makes one online step on a test batch and returns the predictions used to
    score that batch; `state_dict()` / `load_state_dict()` hold everything needed to resume a stream
    (adapted parameters, optimiser and RNG state); `logit_adjust` (e.g. TTAQ's adaptive balanced
    loss) maps logits to the logits used *inside the adaptation loss only*.
    """

    name = "base"

    def __init__(self, model: nn.Module, config: TTAConfig, logit_adjust: LogitAdjust | None = None,
                 seed: int = 0) -> None:
        self.model = model.eval()
        self.config = config
        self.logit_adjust = logit_adjust
        self.params = prepare_bn_affine(model)
        self.gen = torch.Generator().manual_seed(int(seed))

    def forward(self, x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        with BatchStatsNorm(model or self.model, self.config.source_weight):
            return (model or self.model)(x)

    def adjusted(self, logits: torch.Tensor) -> torch.Tensor:
        return self.logit_adjust(logits) if self.logit_adjust is not None else logits

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        return self._adapt(x)

    def _adapt(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _adapt(x) -> logits.")

    # -- resumability ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"params": [p.detach().clone() for p in self.params], "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        params = state.get("params", [])
        if len(params) != len(self.params) or any(
                a.shape != b.shape for a, b in zip(params, self.params, strict=True)):
            raise ConfigError(
                f"TTA state does not fit this model: expected {len(self.params)} BN affine tensors, got "
                f"{len(params)} (or different shapes). Resume with the model the stream started with."
            )
        with torch.no_grad():
            for p, v in zip(self.params, params, strict=True):
                p.copy_(v)
        self.gen.set_state(state["gen"])


@dataclass(frozen=True)
class TTAEntry:
    """A registered TTA method: its config class and its `TTAMethod` subclass."""

    name: str
    config_cls: type
    method_cls: type
    description: str = ""

    def make_config(self, **kwargs: Any):
        return self.config_cls.from_dict(kwargs)

    def build(self, model: nn.Module, config=None, logit_adjust: LogitAdjust | None = None,
              seed: int = 0) -> TTAMethod:
        config = config if config is not None else self.config_cls()
        if not isinstance(config, self.config_cls):
            raise ConfigError(
                f"TTA method {self.name!r} expects a {self.config_cls.__name__}, got {type(config).__name__}."
            )
        return self.method_cls(model, config, logit_adjust, seed)

    def create(self, **config: Any) -> Callable[..., TTAMethod]:
        """This method with `config` bound: call it as `build(model, logit_adjust=None, seed=0)`."""
        return functools.partial(self.build, config=self.make_config(**config))


TTA_METHODS: Registry[TTAEntry] = Registry("TTA method", TTAEntry, home="methods.tta")


def register_tta(name: str, config_cls: type, description: str = ""):
    def add(cls: type) -> type:
        cls.name = name
        TTA_METHODS.register(name)(TTAEntry(name, config_cls, cls, description))
        return cls

    return add


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-row softmax entropy (nats), differentiable."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1)


def clone_frozen(model: nn.Module) -> nn.Module:
    """A deep copy with every parameter frozen (teacher / anchor models)."""
    out = copy.deepcopy(model)
    for p in out.parameters():
        p.requires_grad_(False)
    return out
