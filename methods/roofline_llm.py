"""Roofline analysis of a decoder-only LLM (or a DiT backbone) from its config: prefill and decode.

Paper: "LLM Inference Unveiled: Survey and Roofline Model Insights" (Yuan et al., arXiv 2402.16363);
official code hahnyuan/LLM-Viewer `model_analyzer.py` + `configs/*.py` (snapshot 472f71f).

`mode="compat"` reproduces LLM-Viewer's published formulas exactly [code], quirks included; it
matches the recorded Llama-2-7b / nvidia_A100 / s=1024 / W16A16KV16 run to the printed digits
(decode 8.8539e-3 s, prefill 5.0791e-2 s, decode traffic 1.3768e10 B). `mode="corrected"` fixes
the quirks below; every fix is our reading of the reference and the upstream issues [inferred]
and each row has a test in tests/methods/test_roofline.py.

Symbols: h hidden, I intermediate, a heads, g KV heads, d = h // a, s context length, t query
tokens (s in prefill, 1 in decode), b batch, V vocabulary, wB/aB/kB bytes per element, L layers.

| Node | compat (LLM-Viewer) | corrected |
| --- | --- | --- |
| prefill qk_matmul load_act | s·d·b·**g**·aB | s·d·b·**a**·aB (Q has a heads; user PR #5) |
| fused_attention K/V load | n_blocks·s·d·b·**a**·kB·2 | n_blocks·s·d·b·**g**·kB·2 (issue #12) |
| fused_attention store_act | 2·(t·**s**·b·a·aB) | t·**d**·b·a·aB: O has t·d elements, written once |
| mlp_act | 2·b·**h**·t OPs; load 2·b·h·t·aB, store b·h·t·aB | over b·**I**·t elements (issue #16): |
| | | SiLU 4 (+1 gate mul), GELU 8, ReLU 1 OPs each; load I (x2 if gated), store I |
| lm_head OPs | b·h·V (no factor 2) | **2**·b·h·V |
| lm_head load_act / store_act | h·aB / V·aB (no batch) | b·h·aB / b·V·aB |
| OPT, DiT MLP | gate_proj + up_proj + down_proj | no gate: fc1 (up) + fc2 (down) |
| GPT-J intermediate size | hard-coded 16384 | the config's (n_inner or 4·n_embd) |
| DiT adaLN modulation | not counted | linear h→6h on the conditioning, b rows |
| weight footprint | layers only (head, embedding excluded) | + lm_head, + embedding when untied |
| device without INT8 peak, all bits <= 8 | error (LLM-Viewer: KeyError) | falls back to the FP16 peak |
| any bits > 16 | FP16 peak | FP32 peak where the device lists one |

Both modes: both stages count the head once per sequence (prefill only needs the last token's
logits); norms are 7 OPs/element, adds 1, softmax 5; GPT-J has one norm per layer; a generation
task is prefill(prompt) + Σ decode(KV length) over prompt .. prompt + gen - 1.

The functions take an `LLMConfig` and a `Device` (`methods/roofline_types.py`), never names: a
caller resolves names with `sims.llm_configs.get_llm_config` and `sims.hardware.get_device`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from methods.roofline import OpCost, RooflineConfig, cost_row, select_peak, sum_rows
from methods.roofline_types import Device, LLMConfig, require_device, require_llm_config

# Operations per output element of the MLP activation in corrected mode [inferred]:
# SiLU x·sigmoid(x) = neg, exp, add, div; GELU (tanh form) ≈ 8; ReLU = 1 compare.
ACT_OPS = {"silu": 4, "gelu": 8, "relu": 1}
# LLM-Viewer's GPT-J config hard-codes the FFN width [code: configs/gpt-j-6B.py].
COMPAT_GPTJ_INTERMEDIATE = 16384


@dataclass
class LLMReport:
    """Per-node rows (per layer instance, `count` = layers), totals per stage, memory footprint."""

    model: LLMConfig
    device: Device
    config: RooflineConfig
    peak_dtype: str
    rows: list[dict[str, Any]]
    totals: dict[str, dict[str, float]]
    footprint: dict[str, float]
    generation: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """One flat row (config + headline results) for grids and result sinks."""
        out: dict[str, Any] = {"model": self.model.name, "device": self.device.name,
                               "peak_dtype": self.peak_dtype, **self.config.to_dict(),
                               "kv_bits": self.config.kv}
        for stage, tot in self.totals.items():
            out.update({f"{stage}_{k}": v for k, v in tot.items()})
        out.update({f"footprint_{k}": v for k, v in self.footprint.items()})
        out.update({f"generation_{k}": v for k, v in self.generation.items()})
        return out

    def payload(self) -> dict[str, Any]:
        return {"model": self.model.name, "device": self.device.name, "config": self.config.to_dict(),
                "peak_dtype": self.peak_dtype, "rows": self.rows, "totals": self.totals,
                "footprint": self.footprint, "generation": self.generation}


def _linear_shapes(m: LLMConfig, mode: str) -> dict[str, tuple[float, float]]:
    h, a, g = m.hidden_size, m.num_attention_heads, m.num_key_value_heads
    if mode == "compat":
        inter = COMPAT_GPTJ_INTERMEDIATE if m.family == "gptj" else m.intermediate_size
        gated = m.family != "gptj"  # LLM-Viewer's OPT, ChatGLM3 and DiT configs all list gate_proj
    else:
        inter, gated = m.intermediate_size, m.gated_mlp
    shapes = {"q_proj": (h, h), "k_proj": (h, h * g / a), "v_proj": (h, h * g / a), "out_proj": (h, h)}
    if gated:
        shapes["gate_proj"] = (h, inter)
    shapes["up_proj"] = (h, inter)
    shapes["down_proj"] = (inter, h)
    return shapes


def _linears(m: LLMConfig, t: int, b: int, wB: float, aB: float, kB: float, mode: str) -> list[OpCost]:
    out = []
    for name, (ic, oc) in _linear_shapes(m, mode).items():
        is_kv = name in ("k_proj", "v_proj")
        out.append(OpCost(name, ops=2 * ic * oc * b * t, load_weight=ic * oc * wB, load_act=ic * b * t * aB,
                          store_act=0 if is_kv else oc * b * t * aB,
                          store_kv=oc * b * t * kB if is_kv else 0))
    if mode == "corrected" and m.family == "dit":
        h = m.hidden_size  # adaLN-Zero: one h→6h linear on the conditioning vector per sample
        out.append(OpCost("adaLN_modulation", ops=2 * h * 6 * h * b, load_weight=6 * h * h * wB,
                          load_act=h * b * aB, store_act=6 * h * b * aB))
    return out


def _attention(m: LLMConfig, t: int, s: int, b: int, aB: float, kB: float, flash: bool,
               buffer: float, mode: str) -> list[OpCost]:
    a, g, d = m.num_attention_heads, m.num_key_value_heads, m.head_size
    qk_ops = 2 * t * s * d * a * b
    sv_ops = 2 * t * s * d * a * b
    softmax_ops = 5 * b * a * t * s
    if flash:
        block_r = min(math.ceil(buffer / (kB * d)), d)
        n_blocks = math.ceil(t / block_r)
        if mode == "compat":
            store, kv_heads = 2 * (t * s * b * a * aB), a
        else:
            store, kv_heads = t * d * b * a * aB, g
        return [OpCost("fused_attention", ops=qk_ops + sv_ops + softmax_ops, load_act=t * d * b * a * aB,
                       store_act=store, load_kv=n_blocks * s * d * b * kv_heads * kB * 2)]
    # LLM-Viewer's prefill Q load uses the KV-head count; its decode Q load uses a.
    q_heads = g if (mode == "compat" and t > 1) else a
    return [
        OpCost("qk_matmul", ops=qk_ops, load_act=t * d * b * q_heads * aB, store_act=t * s * b * a * aB,
               load_kv=s * d * b * g * kB),
        OpCost("sv_matmul", ops=sv_ops, load_act=t * s * b * a * aB, store_act=t * d * b * a * aB,
               load_kv=s * d * b * g * kB),
        OpCost("softmax", ops=softmax_ops, load_act=b * a * t * s * aB, store_act=b * a * t * s * aB),
    ]


def _elementwise(m: LLMConfig, t: int, b: int, aB: float, mode: str) -> list[OpCost]:
    h = m.hidden_size
    n = b * h * t
    norms = ["attn_norm", "mlp_norm"][: (1 if m.family == "gptj" else 2) if mode == "compat" else m.num_norms]
    out = [OpCost(name, ops=7 * n, load_act=n * aB, store_act=n * aB) for name in norms]
    out += [OpCost(name, ops=n, load_act=n * aB, store_act=n * aB) for name in ("attn_add", "mlp_add")]
    if mode == "compat":
        out.append(OpCost("mlp_act", ops=2 * n, load_act=2 * n * aB, store_act=n * aB))
    else:
        k = b * m.intermediate_size * t
        gated = m.gated_mlp
        out.append(OpCost("mlp_act", ops=(ACT_OPS[m.activation] + gated) * k,
                          load_act=(2 if gated else 1) * k * aB, store_act=k * aB))
    return out


def _head(m: LLMConfig, b: int, wB: float, aB: float, mode: str) -> list[OpCost]:
    if not m.has_lm_head:
        return []
    h, v = m.hidden_size, m.vocab_size
    if mode == "compat":
        return [OpCost("lm_head", ops=b * h * v, load_weight=h * v * wB, load_act=h * aB, store_act=v * aB)]
    return [OpCost("lm_head", ops=2 * b * h * v, load_weight=h * v * wB, load_act=b * h * aB,
                   store_act=b * v * aB)]


def _stage_costs(m: LLMConfig, stage: str, cfg: RooflineConfig, seq: int, buffer: float) -> list[OpCost]:
    """Per-layer nodes (count = L) followed by the head (count = 1) for one stage."""
    wB, aB, kB = cfg.w_bits / 8, cfg.a_bits / 8, cfg.kv / 8
    t, b, mode = (seq if stage == "prefill" else 1), cfg.batch, cfg.mode
    layer = (_linears(m, t, b, wB, aB, kB, mode) + _attention(m, t, seq, b, aB, kB, cfg.flash, buffer, mode)
             + _elementwise(m, t, b, aB, mode))
    per_layer = [dataclasses.replace(c, count=m.num_hidden_layers) for c in layer]
    return per_layer + _head(m, b, wB, aB, mode)


def _footprint(m: LLMConfig, rows: list[dict[str, Any]], cfg: RooflineConfig) -> dict[str, float]:
    layer_rows = {st: [r for r in rows if r["stage"] == st and r["layer"] != "lm_head"]
                  for st in ("prefill", "decode")}
    weights = sum(r["load_weight"] * r["count"] for r in layer_rows["prefill"])
    if cfg.mode == "corrected" and m.has_lm_head:
        embed = m.hidden_size * m.vocab_size * cfg.w_bits / 8
        weights += embed * (1 if m.tied_embeddings else 2)
    kv = sum(r["store_kv"] * r["count"] for r in layer_rows["prefill"])
    out = {"weights": weights, "kv_cache": kv}
    for stage, stage_rows in layer_rows.items():
        tmp = sum(r["store_act"] for r in stage_rows)  # one layer's activations live at a time
        out[f"{stage}_tmp_act"] = tmp
        out[f"{stage}_total"] = weights + kv + tmp
    return out


def _stage_rows(m: LLMConfig, device: Device, cfg: RooflineConfig, peak: float, seq: int,
                stages: tuple[str, ...] = ("decode", "prefill")) -> list[dict[str, Any]]:
    return [cost_row(stage, c, device.bandwidth, peak)
            for stage in stages for c in _stage_costs(m, stage, cfg, seq, device.onchip_buffer)]


def analyze_llm(model: LLMConfig, device: Device, cfg: RooflineConfig | None = None) -> LLMReport:
    """Roofline of `model` on `device` for prefill of `cfg.seq` tokens and one decode step at KV length
    `cfg.seq` (plus a generation task when `cfg.gen_tokens` > 0)."""
    m, dev = require_llm_config(model, "analyze_llm"), require_device(device, "analyze_llm")
    cfg = cfg or RooflineConfig()
    dtype, peak = select_peak(dev, cfg.w_bits, cfg.a_bits, cfg.kv, cfg.mode)
    rows = _stage_rows(m, dev, cfg, peak, cfg.seq)
    totals = {st: sum_rows(r for r in rows if r["stage"] == st) for st in ("decode", "prefill")}
    report = LLMReport(m, dev, cfg, dtype, rows, totals, _footprint(m, rows, cfg))
    if cfg.gen_tokens:
        report.generation = generation_time(m, dev, cfg, cfg.seq, cfg.gen_tokens)
    return report


def generation_time(model: LLMConfig, device: Device, cfg: RooflineConfig, prompt_len: int,
                    gen_len: int) -> dict[str, float]:
    """Prefill of the prompt plus one decode step per generated token over a growing KV cache."""
    m, dev = require_llm_config(model, "generation_time"), require_device(device, "generation_time")
    _, peak = select_peak(dev, cfg.w_bits, cfg.a_bits, cfg.kv, cfg.mode)
    prefill = sum_rows(_stage_rows(m, dev, cfg, peak, prompt_len, ("prefill",)))["time"]
    decode = sum(sum_rows(_stage_rows(m, dev, cfg, peak, kv_len, ("decode",)))["time"]
                 for kv_len in range(prompt_len, prompt_len + gen_len))
    total = prefill + decode
    return {"prefill_time": prefill, "decode_time": decode, "total_time": total,
            "tokens_per_s": gen_len * cfg.batch / decode if decode > 0 else math.inf}


# ---- grid for sweeps -------------------------------------------------------------------

def roofline_grid(models: Sequence[LLMConfig], devices: Sequence[Device],
                  bits: Sequence[tuple[int, int, int | None]], seqs: Sequence[int], batch: int = 1,
                  flash: bool = False, mode: str = "compat", gen_tokens: int = 0) -> list[dict[str, Any]]:
    """Every model x device x (w, a, kv) bits x sequence length, one flat row each (config + results).

    Pure and deterministic, so a grid sweep can hand the rows straight to the result sink.
    """
    rows = []
    for model in models:
        for device in devices:
            for w, a, kv in bits:
                for seq in seqs:
                    cfg = RooflineConfig(w_bits=w, a_bits=a, kv_bits=kv, batch=batch, seq=seq,
                                         flash=flash, mode=mode, gen_tokens=gen_tokens)
                    report = analyze_llm(model, device, cfg)
                    rows.append(report.summary())
    return rows
