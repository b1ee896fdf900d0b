"""`QuantConfig`: the frozen description of a fake-quantized model layout.

Defaults follow the lab's shared toolbox (reference/quant.md § 1): asymmetric per-output-channel
weights with an MSE observer, asymmetric per-tensor activations, first and last layer at 8 bits
(BRECQ's convention [code]); the log2 post-softmax options follow PTQ4SAM (adaptive tau) and
RepQ-ViT (log-sqrt2). Which of these a method changes is stated in that method's file.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.config_dict import ConfigDict
from methods.errors import ConfigError, did_you_mean
from methods.quant.observers import OBSERVERS
from methods.quant.primitives import GRANULARITIES, Granularity

SOFTMAX_QUANT = ("uniform", "log2", "log_sqrt2")


@dataclass(frozen=True)
class QuantConfig(ConfigDict):
    """Bits, granularities and observers of a fake-quantized model.

    Args:
        w_bits / a_bits: weight / activation bits of every wrapped layer.
        w_granularity: 'channel' (axis 0), 'tensor' or 'group' (with w_group_size).
        w_observer / a_observer: 'minmax', 'ema', 'percentile' or 'mse'.
        a_p: exponent of the Lp search for activation ranges (BRECQ uses 2.4).
        softmax_quant: post-softmax quantizer of the attention product: 'uniform', 'log2' (adaptive
            tau in {1, 2, 4}, PTQ4SAM) or 'log_sqrt2' (tau = 2, RepQ-ViT).
        quant_matmul: quantize the attention products q k^T and softmax v.
        first_last_bits: bits of the first and last Linear/Conv (weights and inputs); None keeps
            w_bits / a_bits there too.
    """

    w_bits: int = 4
    a_bits: int = 4
    w_granularity: str = "channel"
    w_group_size: int | None = None
    w_symmetric: bool = False
    a_symmetric: bool = False
    w_observer: str = "mse"
    a_observer: str = "minmax"
    a_p: float = 2.0
    softmax_quant: str = "uniform"
    quant_matmul: bool = True
    first_last_bits: int | None = 8
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("w_bits", "a_bits"):
            bits = getattr(self, name)
            if not isinstance(bits, int) or not 2 <= bits <= 16:
                raise ConfigError(f"{name} must be an int in 2..16, got {bits!r}.")
        if self.first_last_bits is not None and not 2 <= self.first_last_bits <= 16:
            raise ConfigError(f"first_last_bits must be None or in 2..16, got {self.first_last_bits!r}.")
        if self.w_granularity not in GRANULARITIES:
            raise ConfigError(
                f"w_granularity must be one of {GRANULARITIES}, got {self.w_granularity!r}. "
                f"{did_you_mean(str(self.w_granularity), GRANULARITIES)}"
            )
        Granularity(self.w_granularity, 0, self.w_group_size)  # validates group_size
        for name in ("w_observer", "a_observer"):
            val = getattr(self, name)
            if val not in OBSERVERS:
                raise ConfigError(
                    f"{name} must be one of {OBSERVERS}, got {val!r}. {did_you_mean(str(val), OBSERVERS)}"
                )
        if self.softmax_quant not in SOFTMAX_QUANT:
            raise ConfigError(
                f"softmax_quant must be one of {SOFTMAX_QUANT}, got {self.softmax_quant!r}. "
                f"{did_you_mean(str(self.softmax_quant), SOFTMAX_QUANT)}"
            )
        if not self.a_p > 0:
            raise ConfigError(f"a_p must be positive, got {self.a_p}.")
        if self.version != 1:
            raise ConfigError(f"QuantConfig version {self.version} is unknown; this code reads version 1.")

    @property
    def weight_granularity(self) -> Granularity:
        return Granularity(self.w_granularity, 0, self.w_group_size)



    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {
            "w_bits": ("categorical", [2, 3, 4, 6, 8]),
            "a_bits": ("categorical", [2, 3, 4, 6, 8]),
            "w_observer": ("categorical", ["minmax", "mse", "percentile"]),
            "a_observer": ("categorical", ["minmax", "mse", "percentile"]),
        }
