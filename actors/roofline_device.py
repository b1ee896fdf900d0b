"""Task for the generic evaluator: one roofline "virtual device" analysis per trial.

Thin: parses the trial's parameters (bits with `methods.quant.bits`) and calls
`methods.roofline_llm.analyze_llm`; no maths here.
"""

from __future__ import annotations

from typing import Any

from actors.task import register_task
from methods.quant.bits import parse_bits
from methods.roofline import RooflineConfig
from methods.roofline_llm import analyze_llm
from sims.hardware import get_device
from sims.llm_configs import get_llm_config

#: The bits a roofline trial takes (`methods.quant.bits`): w1..16 a1..16, kv optional (absent: same
#: as the activation bits, LLM-Viewer's rule); 'fp' and per-module overrides are refused.
ROOFLINE_BITS = {"w": (1, 16), "a": (1, 16), "kv": (1, 16), "fp": False, "who": "roofline"}


@register_task("roofline_device")
class RooflineTask:
    def __init__(
        self, batch: int = 1, flash: bool = False, mode: str = "compat", gen_tokens: int = 0
    ) -> None:
        self.batch, self.flash, self.mode, self.gen_tokens = batch, flash, mode, gen_tokens

    def evaluate(
        self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int
    ) -> dict[str, Any]:
        spec = parse_bits(params["bits"]).require(**ROOFLINE_BITS)
        cfg = RooflineConfig(
            w_bits=spec.w,
            a_bits=spec.a,
            kv_bits=spec.kv,
            batch=self.batch,
            seq=int(params["seq"]),
            flash=self.flash,
            mode=self.mode,
            gen_tokens=self.gen_tokens,
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
