"""Task for the generic evaluator: one roofline "virtual device" analysis per trial.

Thin: parses the trial's parameters (bits with `methods.quant.bits`) and calls
`methods.roofline_llm.analyze_llm`; no maths here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.task import register_task
from methods.config_dict import ConfigDict
from methods.errors import ConfigError
from methods.quant.bits import parse_bits
from methods.roofline import RooflineConfig
from methods.roofline_llm import analyze_llm
from sims.hardware import get_device
from sims.llm_configs import get_llm_config

#: The bits a roofline trial takes (`methods.quant.bits`): w1..16 a1..16, kv optional (absent: same
#: as the activation bits, LLM-Viewer's rule); 'fp' and per-module overrides are refused.
ROOFLINE_BITS = {"w": (1, 16), "a": (1, 16), "kv": (1, 16), "fp": False, "who": "roofline"}


MODES = ("compat", "corrected")


@dataclass(frozen=True)
class RooflineTaskConfig(ConfigDict):
    """What every trial of a roofline sweep shares: batch size, FlashAttention, LLM-Viewer's compat
    mode or our corrected one (methods/roofline.py), tokens generated after the prompt."""

    batch: int = 1
    flash: bool = False
    mode: str = "compat"
    gen_tokens: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"task.mode must be one of {list(MODES)}, got {self.mode!r}.")
        if self.batch < 1 or self.gen_tokens < 0:
            raise ConfigError(
                f"task.batch must be >= 1 and task.gen_tokens >= 0, got {self.batch}, {self.gen_tokens}."
            )


@register_task("roofline_device")
class RooflineTask:
    def __init__(self, config: RooflineTaskConfig = RooflineTaskConfig()) -> None:
        self.config = config

    def evaluate(
        self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int
    ) -> dict[str, Any]:
        spec = parse_bits(params["bits"]).require(**ROOFLINE_BITS)
        cfg = RooflineConfig(
            w_bits=spec.w,
            a_bits=spec.a,
            kv_bits=spec.kv,
            batch=self.config.batch,
            seq=int(params["seq"]),
            flash=self.config.flash,
            mode=self.config.mode,
            gen_tokens=self.config.gen_tokens,
        )
        summary = analyze_llm(get_llm_config(params["model"]), get_device(params["device"]), cfg).summary()
        metrics = {
            k: v for k, v in summary.items() if k not in params and k not in ("model", "device", "seq")
        }
        return {
            "objectives": {
                "decode_time": summary["decode_time"],
                "prefill_time": summary["prefill_time"],
                "footprint_decode_total": summary["footprint_decode_total"],
            },
            "metrics": metrics,
        }
