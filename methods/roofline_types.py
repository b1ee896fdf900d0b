"""The objects the roofline methods take: a `Device` (a roof and a slope) and an `LLMConfig` (a shape).

Paper: "LLM Inference Unveiled: Survey and Roofline Model Insights" (Yuan et al., arXiv 2402.16363),
official code hahnyuan/LLM-Viewer (`hardwares/hardware_params.py`, `configs/*.py`).

Methods take these objects, never names: `methods/roofline_llm.py` and `methods/roofline_vision.py`
compute on a `Device` and an `LLMConfig` they are handed. The *tables* of named devices and models
live one layer up, in the worlds: `sims/hardware.py` (`get_device`) and `sims/llm_configs.py`
(`get_llm_config`, which also reads a local `config.json`); callers resolve names there.

- [code] `Device` follows LLM-Viewer's hardware conventions: `bandwidth` in bytes per second,
  `peaks` in dense operations per second per data type (one multiply-add = 2 OPs), `onchip_buffer`
  in bytes.
- [inferred] `LLMConfig` records the *true* architecture (gated MLP or not, number of norms,
  activation, tied embeddings); LLM-Viewer's own deviations are applied by compat mode in
  `methods/roofline_llm.py`, not stored here.
- [inferred] `require_device` / `require_llm_config`: a name where an object belongs is refused
  with an error that says where to resolve it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

from methods.errors import ConfigError

DTYPES = ("FP32", "FP16", "INT8")


@dataclass(frozen=True)
class Device:
    """One virtual device: a roof (peak OPS per data type) and a slope (memory bandwidth)."""

    name: str
    bandwidth: float
    peaks: Mapping[str, float]
    onchip_buffer: float
    source: str
    kind: str = "gpu"
    note: str = ""
    version: int = 1

    def __post_init__(self) -> None:
        if not self.bandwidth > 0:
            raise ConfigError(f"device {self.name!r}: bandwidth must be > 0 B/s, got {self.bandwidth!r}.")
        unknown = set(self.peaks) - set(DTYPES)
        if unknown:
            raise ConfigError(
                f"device {self.name!r}: peak data types must be among {DTYPES}, got {sorted(unknown)}."
            )
        if any(not v > 0 for v in self.peaks.values()):
            raise ConfigError(f"device {self.name!r}: every peak must be > 0 OPS, got {dict(self.peaks)}.")
        if "FP16" not in self.peaks:
            raise ConfigError(f"device {self.name!r}: an FP16 peak is required (LLM-Viewer's default roof).")
        # A read-only view, so a shared table entry cannot be edited by accident.
        object.__setattr__(self, "peaks", MappingProxyType(dict(self.peaks)))

    def peak(self, dtype: str) -> float:
        """Peak OPS for `dtype` ("FP32", "FP16" or "INT8"); a clear error when the table lacks it."""
        try:
            return self.peaks[dtype]
        except KeyError:
            raise ConfigError(
                f"device {self.name!r} has no {dtype} peak (it lists {sorted(self.peaks)}); "
                f"use mode='corrected' (falls back to FP16) or pick another device."
            ) from None

    def turning_point(self, dtype: str = "FP16") -> float:
        """Arithmetic intensity (OPs per byte) where the memory roof meets the compute roof."""
        return self.peak(dtype) / self.bandwidth

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bandwidth": self.bandwidth,
            "peaks": dict(self.peaks),
            "onchip_buffer": self.onchip_buffer,
            "source": self.source,
            "kind": self.kind,
            "note": self.note,
            "version": self.version,
        }


FAMILIES = ("llama", "opt", "gptj", "chatglm", "dit")
ACTIVATIONS = ("silu", "relu", "gelu")


@dataclass(frozen=True)
class LLMConfig:
    """Shape of a decoder-only LLM (or a DiT backbone) as the roofline analysis needs it.

    `num_key_value_heads` < `num_attention_heads` means grouped-query attention. `vocab_size` 0 and
    `has_lm_head` False describe a DiT (no language-model head). `default_seq` is the sequence length
    used when none is given (DiT: tokens of a 256x256 image).
    """

    name: str
    family: str
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    vocab_size: int
    gated_mlp: bool = True
    num_norms: int = 2
    activation: str = "silu"
    tied_embeddings: bool = False
    has_lm_head: bool = True
    default_seq: int = 1024
    source: str = ""
    version: int = 1

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"{self.name}: family must be one of {FAMILIES}, got {self.family!r}.")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"{self.name}: activation must be one of {ACTIVATIONS}, got {self.activation!r}."
            )
        for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                    "num_hidden_layers", "default_seq"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{self.name}: {key} must be a positive integer, got {value!r}.")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 0:
            raise ConfigError(f"{self.name}: vocab_size must be an integer >= 0, got {self.vocab_size!r}.")
        if self.has_lm_head and self.vocab_size == 0:
            raise ConfigError(f"{self.name}: a model with an LM head needs vocab_size > 0.")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"{self.name}: num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads}); check the config."
            )
        if self.num_norms not in (1, 2):
            raise ConfigError(f"{self.name}: num_norms must be 1 or 2, got {self.num_norms!r}.")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require(obj: Any, cls: type, resolver: str, who: str) -> Any:
    """`obj` itself when it is a `cls`; a ConfigError saying how to resolve a name otherwise."""
    if isinstance(obj, cls):
        return obj
    what = f"{'an' if cls.__name__[0] in 'AEIOUL' else 'a'} {cls.__name__}"
    hint = f"resolve the name first: {resolver}({obj!r})" if isinstance(obj, str) else f"pass {what}"
    raise ConfigError(f"{who} takes {what}, got {type(obj).__name__} {obj!r}; {hint}.")


def require_device(device: Any, who: str) -> Device:
    return _require(device, Device, "sims.hardware.get_device", who)


def require_llm_config(model: Any, who: str) -> LLMConfig:
    return _require(model, LLMConfig, "sims.llm_configs.get_llm_config", who)
