"""Evaluation hygiene: refuse to evaluate a half-quantized model.

The bug this guards against [code, documented in SAQ-SAM's and AHCPTQ's READMEs]: PTQ4SAM's and
SAQ-SAM's released code resets QDrop's drop probability to 1 only for quantizers whose name contains
`post_act_fake_quantize`; every other activation quantizer keeps p = 0.5 at test time, so about half
of those activations stay in full precision and every reconstruction-based mAP is inflated.
`check_ready_for_eval` raises on any quantizer that is disabled, uncalibrated, still observing, has a
drop probability other than 1, or whose AdaRound rounding is still soft [our design].
"""

from __future__ import annotations

from torch import nn

from methods.errors import EvfarmError
from methods.quant.modules import _QuantWeightLayer
from methods.quant.quantizers import QuantizerBase


class QuantStateError(EvfarmError):
    """A fake-quantized model is not in a state that may be evaluated as 'quantized'."""


def readiness_problems(model: nn.Module) -> list[str]:
    problems = []
    n = 0
    for name, m in model.named_modules():
        if isinstance(m, QuantizerBase):
            n += 1
            if not m.enabled:
                problems.append(f"{name}: quantizer disabled (bypassed)")
            if not m.calibrated:
                problems.append(f"{name}: quantizer never calibrated (passes values through)")
            if m.observing:
                problems.append(f"{name}: observer still collecting statistics")
            if m.drop_prob != 1.0:
                problems.append(f"{name}: drop probability {m.drop_prob} != 1 (QDrop mixing left on)")
        if isinstance(m, _QuantWeightLayer) and m.adaround is not None and m.adaround.soft:
            problems.append(f"{name}: AdaRound rounding not hardened")
    if n == 0:
        problems.append("model has no quantizers (did you call quantize_?)")
    return problems


def check_ready_for_eval(model: nn.Module) -> None:
    """Raise `QuantStateError` listing every quantizer that would make a quantized evaluation dishonest."""
    problems = readiness_problems(model)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... ({len(problems) - 8} more)" if len(problems) > 8 else "")
        raise QuantStateError(
            f"Refusing to evaluate: expected every quantizer enabled, calibrated, hardened and with drop "
            f"probability 1, but found {len(problems)} problem(s): {shown}. Call "
            "methods.quant.finalize_for_eval(model) after reconstruction, or evaluate the FP model "
            "explicitly."
        )


def finalize_for_eval(model: nn.Module) -> nn.Module:
    """Reset every drop probability to 1, stop observers, harden AdaRound: the fix for the bug above."""
    for m in model.modules():
        if isinstance(m, QuantizerBase):
            m.drop_prob = 1.0
            if m.observing and hasattr(m, "finish_observing"):
                m.finish_observing()
        if isinstance(m, _QuantWeightLayer) and m.adaround is not None:
            m.adaround.harden()
    return model
