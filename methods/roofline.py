"""Roofline virtual devices: per-layer OPs, bytes, arithmetic intensity, bound and time.

Paper: "LLM Inference Unveiled: Survey and Roofline Model Insights" (Yuan et al., arXiv 2402.16363);
official code hahnyuan/LLM-Viewer (`roofline_model.py`, `model_analyzer.py`, snapshot 472f71f).

This module holds the parts shared by the LLM analysis (`methods/roofline_llm.py`) and the traced
vision analysis (`methods/roofline_vision.py`):

- [code] the roofline itself: AI = OPs / bytes; below the turning point (peak / bandwidth) a layer
  is memory-bound and runs at AI x bandwidth, otherwise compute-bound at the peak; time = OPs /
  performance (= max(OPs / peak, bytes / bandwidth)); bytes = load_weight + load_act + store_act +
  load_kv + store_kv;
- [code] peak selection: the INT8 peak only when weight, activation and KV bits are all <= 8,
  else FP16 (so W4A16 runs at the FP16 peak);
- [inferred] corrected mode's peak selection additionally falls back to FP16 when a device lists
  no INT8 peak (LLM-Viewer raises KeyError) and uses an FP32 peak, where listed, for bits > 16;
- [inferred] the frozen `RooflineConfig`, the row/totals format, CSV/JSON/text rendering and the
  roofline figure (returned, never written: no file I/O here). `roofline_grid` for sweeps lives in
  `methods/roofline_llm.py`, which builds on this module (this one imports neither analysis), and
  the `Device`/`LLMConfig` types in `methods/roofline_types.py`.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from methods.errors import ConfigError

MODES = ("compat", "corrected")
COST_KEYS = ("ops", "load_weight", "load_act", "store_act", "load_kv", "store_kv")
TOTAL_KEYS = ("ops", "memory_access", *COST_KEYS[1:], "time")
ROW_KEYS = ("stage", "layer", "count", "ops", "memory_access", "load_weight", "load_act", "store_act",
            "load_kv", "store_kv", "arithmetic_intensity", "bound", "time", "total_time")


def check_bits(name: str, value: Any) -> int:
    """A bit width must be an integer from 1 to 32 (bool and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise ConfigError(f"{name} must be an integer number of bits from 1 to 32, got {value!r}.")
    return value


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}.")
    return mode


@dataclass(frozen=True)
class RooflineConfig:
    """What to analyse: bit widths, batch, sequence length, FlashAttention, mode, generated tokens.

    `kv_bits=None` means "same as a_bits" (LLM-Viewer's rule). `gen_tokens` > 0 adds a generation
    task: prefill of `seq` tokens plus decode over KV lengths seq .. seq + gen_tokens - 1.
    """

    w_bits: int = 16
    a_bits: int = 16
    kv_bits: int | None = None
    batch: int = 1
    seq: int = 1024
    flash: bool = False
    mode: str = "compat"
    gen_tokens: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        check_bits("w_bits", self.w_bits)
        check_bits("a_bits", self.a_bits)
        if self.kv_bits is not None:
            check_bits("kv_bits", self.kv_bits)
        for key in ("batch", "seq"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be a positive integer, got {value!r}.")
        if isinstance(self.gen_tokens, bool) or not isinstance(self.gen_tokens, int) or self.gen_tokens < 0:
            raise ConfigError(f"gen_tokens must be an integer >= 0, got {self.gen_tokens!r}.")
        if not isinstance(self.flash, bool):
            raise ConfigError(f"flash must be True or False, got {self.flash!r}.")
        check_mode(self.mode)

    @property
    def kv(self) -> int:
        return self.a_bits if self.kv_bits is None else self.kv_bits

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def search_space() -> dict[str, tuple]:
        return {
            "w_bits": ("categorical", [2, 3, 4, 8, 16]),
            "a_bits": ("categorical", [4, 8, 16]),
            "kv_bits": ("categorical", [2, 4, 8, 16]),
            "flash": ("categorical", [False, True]),
        }


@dataclass(frozen=True)
class OpCost:
    """Work and traffic of one node; `count` is how many times it runs (e.g. the layer count)."""

    name: str
    ops: float
    load_weight: float = 0.0
    load_act: float = 0.0
    store_act: float = 0.0
    load_kv: float = 0.0
    store_kv: float = 0.0
    count: int = 1

    @property
    def memory_access(self) -> float:
        return self.load_weight + self.load_act + self.store_act + self.load_kv + self.store_kv


def roofline_point(ops: float, memory_access: float, bandwidth: float, peak: float) -> dict[str, Any]:
    """LLM-Viewer's `roofline_analyze` plus the time: AI, performance, bound and seconds."""
    if memory_access <= 0:  # nothing moved: the compute roof is the only limit
        intensity = math.inf
    else:
        intensity = ops / memory_access
    if intensity < peak / bandwidth:
        bound, performance = "memory", intensity * bandwidth
    else:
        bound, performance = "compute", peak
    time = ops / performance if performance > 0 else memory_access / bandwidth
    return {"arithmetic_intensity": intensity, "performance": performance, "bound": bound, "time": time}


def select_peak(device: Any, w_bits: int, a_bits: int, kv_bits: int, mode: str) -> tuple[str, float]:
    """The roof a run uses: INT8 when every bit width <= 8, else FP16 (see the module docstring)."""
    check_mode(mode)
    if max(w_bits, a_bits, kv_bits) <= 8:
        if mode == "corrected" and "INT8" not in device.peaks:
            return "FP16", device.peak("FP16")
        return "INT8", device.peak("INT8")
    if mode == "corrected" and max(w_bits, a_bits, kv_bits) > 16 and "FP32" in device.peaks:
        return "FP32", device.peak("FP32")
    return "FP16", device.peak("FP16")


def cost_row(stage: str, cost: OpCost, bandwidth: float, peak: float, **extra: Any) -> dict[str, Any]:
    """One table row: the node's per-instance numbers, its roofline point and its total time."""
    point = roofline_point(cost.ops, cost.memory_access, bandwidth, peak)
    row = {"stage": stage, "layer": cost.name, "count": cost.count, "ops": cost.ops,
           "memory_access": cost.memory_access}
    row.update({k: getattr(cost, k) for k in COST_KEYS[1:]})
    row.update({"arithmetic_intensity": point["arithmetic_intensity"], "bound": point["bound"],
                "time": point["time"], "total_time": point["time"] * cost.count})
    row.update(extra)
    return row


def sum_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Totals over rows, each weighted by its `count` (time summed per node, as LLM-Viewer does)."""
    total = dict.fromkeys(TOTAL_KEYS, 0.0)
    for row in rows:
        for key in TOTAL_KEYS:
            total[key] += row[key] * row["count"]
    return total


# ---- rendering (pure: strings and figures; the CLI writes them) ---------------------------

def _fmt(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value and (abs(value) >= 1e5 or abs(value) < 0.1):
            return f"{value:.4e}"
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    return "" if value is None else str(value)


def format_table(rows: Sequence[Mapping[str, Any]], totals: Mapping[str, Mapping[str, Any]],
                 keys: Sequence[str] = ROW_KEYS) -> str:
    """A fixed-width text table of `rows` followed by one totals line per stage."""
    cells = [list(keys)] + [[_fmt(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.append("")
    for stage, tot in totals.items():
        lines.append(f"total {stage}: " + " ".join(f"{k}={_fmt(v)}" for k, v in tot.items()))
    return "\n".join(lines)


def format_csv(rows: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None) -> str:
    keys = list(keys or (rows[0].keys() if rows else ROW_KEYS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def format_json(payload: Mapping[str, Any]) -> str:
    """JSON text; infinite intensities (nodes that move no bytes) become the string "inf"."""
    return json.dumps(_jsonable(payload), indent=2)


def roofline_figure(rows: Sequence[Mapping[str, Any]], device: Any, dtypes: Sequence[str] = ("FP16", "INT8"),
                    title: str = ""):
    """A log-log roofline of `device` with each row as a point (x = AI, y = achieved OPS).

    Returns a matplotlib Figure built without pyplot (methods.plotting: Agg canvas), so nothing
    global is touched; write it with `methods.plotting.save_figure`.
    """
    from methods.plotting import new_figure

    fig, ax = new_figure(figsize=(7, 5))
    finite = [r for r in rows if r["ops"] > 0 and math.isfinite(r["arithmetic_intensity"])]
    ais = [r["arithmetic_intensity"] for r in finite] or [1.0]
    lo, hi = min(ais + [1e-2]) / 2, max(ais + [device.turning_point("FP16") * 10]) * 2
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    for dtype in dtypes:
        if dtype in device.peaks:
            peak = device.peak(dtype)
            ax.plot(xs, [min(peak, x * device.bandwidth) for x in xs], label=f"{dtype} roof")
    for stage in sorted({r["stage"] for r in finite}):
        pts = [r for r in finite if r["stage"] == stage]
        ax.scatter([r["arithmetic_intensity"] for r in pts], [r["ops"] / r["time"] for r in pts],
                   s=14, label=stage)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (OPs/byte)")
    ax.set_ylabel("performance (OPs/s)")
    ax.set_title(title or f"roofline on {device.name}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return fig
