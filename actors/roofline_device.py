"""Task for the generic evaluator: one roofline "virtual device" analysis per trial.

Thin: parses the trial's parameters and calls `methods.roofline_llm.analyze_llm`; no maths here.
"""

from __future__ import annotations

from typing import Any

from actors.task import register_task
from methods.errors import ConfigError
from methods.roofline import RooflineConfig
from methods.roofline_llm import analyze_llm


def parse_bits(text: str) -> tuple[int, int, int]:
    """'W4A16KV8' or '4-16-8' → (w_bits, a_bits, kv_bits)."""
    t = str(text).upper().replace("W", " ").replace("KV", " ").replace("A", " ").replace("-", " ").split()
    if len(t) != 3 or not all(x.isdigit() for x in t):
        raise ConfigError(f"bits must look like 'W4A16KV8' or '4-16-8', got {text!r}.")
    return int(t[0]), int(t[1]), int(t[2])


@register_task("roofline_device")
class RooflineTask:
    def __init__(
        self, batch: int = 1, flash: bool = False, mode: str = "compat", gen_tokens: int = 0
    ) -> None:
        self.batch, self.flash, self.mode, self.gen_tokens = batch, flash, mode, gen_tokens

    def evaluate(
        self, params: dict[str, Any], *, seed: int, trial: int, chunk: int, n_chunks: int
    ) -> dict[str, Any]:
        w, a, kv = parse_bits(params["bits"])
        cfg = RooflineConfig(
            w_bits=w,
            a_bits=a,
            kv_bits=kv,
            batch=self.batch,
            seq=int(params["seq"]),
            flash=self.flash,
            mode=self.mode,
            gen_tokens=self.gen_tokens,
        )
        summary = analyze_llm(params["model"], params["device"], cfg).summary()
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
