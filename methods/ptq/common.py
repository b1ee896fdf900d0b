"""Shared pieces of the PTQ methods: configs, the registry entry type, and the runner that copies the
model, times calibration, finalises for evaluation and writes the report [our design]."""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from methods.config_dict import ConfigDict
from methods.errors import ConfigError
from methods.quant import QuantConfig, bits_report, check_ready_for_eval, finalize_for_eval
from methods.quant.recon import ReconConfig
from methods.registry import Registry


@dataclass(frozen=True)
class PTQConfig(ConfigDict):
    """Fields every PTQ method shares (bits, observers, first/last-layer policy)."""

    w_bits: int = 4
    a_bits: int = 4
    first_last_bits: int | None = 8
    w_observer: str = "minmax"
    a_observer: str = "minmax"
    softmax_quant: str = "uniform"
    calib_batch: int = 64
    version: int = 1

    def __post_init__(self) -> None:
        self.quant_config()  # validates bits/observers
        if self.calib_batch < 1:
            raise ConfigError(f"calib_batch must be >= 1, got {self.calib_batch}.")

    def quant_config(self, **overrides: Any) -> QuantConfig:
        base = {
            "w_bits": self.w_bits,
            "a_bits": self.a_bits,
            "first_last_bits": self.first_last_bits,
            "w_observer": self.w_observer,
            "a_observer": self.a_observer,
            "softmax_quant": self.softmax_quant,
        }
        return QuantConfig(**{**base, **overrides})



    @classmethod
    def search_space(cls) -> dict[str, tuple]:
        return {"w_bits": ("categorical", [2, 3, 4, 6, 8]), "a_bits": ("categorical", [2, 3, 4, 6, 8])}


@dataclass(frozen=True)
class ReconPTQConfig(PTQConfig):
    """Adds the reconstruction knobs (defaults: QDrop's, tiny-scale iteration count)."""

    w_observer: str = "mse"
    iters: int = 200
    batch_size: int = 32
    weight_lr: float = 1e-3
    act_lr: float = 4e-5
    round_weight: float = 0.01
    drop_prob: float = 1.0
    #: observe activation ranges with weight fake-quant on (BRECQ) or with all fake-quant off (QDrop)
    calib_weights_quantized: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.recon_config()

    def recon_config(self, **overrides: Any) -> ReconConfig:
        base = {
            "iters": self.iters,
            "batch_size": self.batch_size,
            "weight_lr": self.weight_lr,
            "act_lr": self.act_lr,
            "round_weight": self.round_weight,
            "drop_prob": self.drop_prob,
        }
        return ReconConfig(**{**base, **overrides})

    @classmethod
    def search_space(cls) -> dict[str, tuple]:
        return {
            **super().search_space(),
            "iters": ("int", 50, 2000),
            "act_lr": ("float", 1e-5, 1e-3),
            "round_weight": ("float", 1e-3, 1e-1),
        }


@dataclass
class PTQResult:
    model: nn.Module
    report: dict[str, Any] = field(default_factory=dict)


Body = Callable[[nn.Module, torch.Tensor, Any, int, Callable], list[dict]]


@dataclass(frozen=True)
class PTQMethod:
    """A registered method: `body(qmodel_copy, calib_x, config, seed, forward_fn) -> recon stats`."""

    name: str
    config_cls: type
    body: Body
    description: str = ""

    def make_config(self, **kwargs: Any):
        return self.config_cls.from_dict(kwargs)

    def create(self, **config: Any) -> Callable[..., PTQResult]:
        """This method with `config` bound: call it as `quantize(model, calib_x, seed=0, forward_fn=None)`."""
        return functools.partial(self.run, config=self.make_config(**config))

    def run(
        self,
        model: nn.Module,
        calib_x: torch.Tensor,
        config=None,
        seed: int = 0,
        forward_fn: Callable | None = None,
    ) -> PTQResult:
        config = config if config is not None else self.config_cls()
        if not isinstance(config, self.config_cls):
            raise ConfigError(
                f"PTQ method {self.name!r} expects a {self.config_cls.__name__}, "
                f"got {type(config).__name__}. "
                f"Use PTQ_METHODS.get({self.name!r}).make_config(...)."
            )
        forward_fn = forward_fn or (lambda m, xb: m(xb))
        qmodel = copy.deepcopy(model).eval()
        torch.manual_seed(seed)
        start, cpu_start = time.perf_counter(), time.process_time()
        stats = self.body(qmodel, calib_x, config, seed, forward_fn)
        finalize_for_eval(qmodel)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        check_ready_for_eval(qmodel)
        report = {
            "method": self.name,
            "config": config.to_dict(),
            "seed": seed,
            "calib_seconds": seconds,
            "calib_cpu_seconds": cpu_seconds,
            "calib_images": int(calib_x.shape[0]),
            "bits": bits_report(qmodel),
            "recon": stats,
        }
        return PTQResult(qmodel, report)


PTQ_METHODS: Registry[PTQMethod] = Registry("PTQ method", PTQMethod, home="methods.ptq")


def register_ptq(name: str, config_cls: type, description: str = "") -> Callable[[Body], Body]:
    def add(body: Body) -> Body:
        PTQ_METHODS.register(name)(PTQMethod(name, config_cls, body, description))
        return body

    return add
