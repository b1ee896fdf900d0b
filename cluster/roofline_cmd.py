"""`evfarm roofline MODEL --hw DEVICE ...`: a per-layer roofline table, totals and an optional plot.

The maths lives in `methods/roofline*.py` (LLM-Viewer's formulas, "LLM Inference Unveiled: Survey and
Roofline Model Insights", arXiv 2402.16363); this file only parses flags, formats, and writes the
plot file [inferred]. `cluster/cli.py` calls `add_parser(subparsers)` and then the parsed
namespace's `func` (this module's `run`), which returns the exit status: 0 on success, 2 on bad
input (an unknown model or device, bits that make no sense), with a one-paragraph message.

MODEL is a built-in LLM/DiT name (`Llama-2-7b`, `opt-1.3b`, `DiT-XL/2`, ... or a Hugging Face id),
a local `config.json` (or a folder holding one), or a zoo model name together with
`--input-shape` (traced vision analysis, random weights: the cost does not depend on them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from methods.errors import ConfigError, EvfarmUserError
from methods.roofline import (
    MODES,
    ROW_KEYS,
    RooflineConfig,
    format_csv,
    format_json,
    format_table,
    roofline_figure,
)
from sims.hardware import get_device

FORMATS = ("table", "csv", "json")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "roofline",
        help="predict per-layer latency of a model on a virtual device (roofline model)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("model", help="built-in model name, HF id, path to config.json, or zoo model name")
    p.add_argument("--hw", required=True, help="device name, e.g. nvidia_A100, raspberry_pi5_cpu")
    p.add_argument("--seq", type=int, default=None, help="sequence length / KV length (default: model's)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--w-bits", type=int, default=16)
    p.add_argument("--a-bits", type=int, default=16)
    p.add_argument("--kv-bits", type=int, default=None, help="default: same as --a-bits")
    p.add_argument("--flash", action="store_true", help="use FlashAttention (one fused node)")
    p.add_argument("--mode", choices=MODES, default="compat")
    p.add_argument("--gen", type=int, default=0, help="also time generating this many tokens")
    p.add_argument("--stage", choices=("both", "prefill", "decode"), default="both")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--plot", type=Path, default=None, help="write a roofline PNG here")
    p.add_argument("--input-shape", default=None, help="zoo models only: input tensor shape, e.g. 1,1,16,16")
    p.set_defaults(func=run)
    return p


def _vision_report(args: argparse.Namespace):
    """Trace a zoo model (architecture only) on a random input of --input-shape."""
    import torch

    from methods.roofline_vision import analyze_module
    from sims.zoo.registry import ZOO

    spec = ZOO.get(args.model)
    try:
        shape = tuple(int(v) for v in args.input_shape.split(","))
    except ValueError:
        raise ConfigError(
            f"--input-shape must be integers separated by commas, got {args.input_shape!r}."
        ) from None
    model = spec.build().eval()
    return analyze_module(
        model, (torch.zeros(shape),), get_device(args.hw), default_bits=(args.w_bits, args.a_bits),
        mode=args.mode,
    )


def _report(args: argparse.Namespace):
    from methods.roofline_llm import analyze_llm
    from sims.llm_configs import get_llm_config

    if args.input_shape is not None:
        return _vision_report(args)
    model = get_llm_config(args.model)
    cfg = RooflineConfig(
        w_bits=args.w_bits,
        a_bits=args.a_bits,
        kv_bits=args.kv_bits,
        batch=args.batch,
        seq=args.seq or model.default_seq,
        flash=args.flash,
        mode=args.mode,
        gen_tokens=args.gen,
    )
    return analyze_llm(model, get_device(args.hw), cfg)


def render(report: Any, fmt: str, stage: str = "both") -> str:
    """The report as text in `fmt` (table, csv or json), restricted to one stage if asked."""
    rows = [r for r in report.rows if stage == "both" or r["stage"] == stage]
    totals = {k: v for k, v in report.totals.items() if stage == "both" or k in (stage, "forward")}
    if fmt == "json":
        payload = report.payload()
        payload.update(rows=rows, totals=totals)
        return format_json(payload)
    if fmt == "csv":
        return format_csv(rows)
    keys = ROW_KEYS if "op" not in (rows[0] if rows else {}) else (*ROW_KEYS, "w_bits", "a_bits")
    text = format_table(rows, totals, keys)
    extra = {
        **getattr(report, "footprint", {}),
        **{f"gen_{k}": v for k, v in getattr(report, "generation", {}).items()},
    }
    if extra:
        text += "\n" + " ".join(f"{k}={v:.4e}" for k, v in extra.items())
    return text


def run(args: argparse.Namespace) -> int:
    try:
        report = _report(args)
        device = get_device(args.hw)
        print(render(report, args.format, args.stage))
        if args.plot is not None:
            rows = [r for r in report.rows if args.stage == "both" or r["stage"] == args.stage]
            fig = roofline_figure(rows, device, title=f"{args.model} on {device.name}")
            from methods.plotting import save_figure

            try:
                save_figure(fig, args.plot, dpi=110)
            except (OSError, ValueError) as exc:  # a file where a folder should be, read-only, bad suffix
                raise EvfarmUserError(
                    f"Cannot write the plot to {args.plot} ({exc}). Pass --plot a .png, .svg or .pdf path "
                    f"in a writable folder."
                ) from exc
            print(f"plot: {args.plot}", file=sys.stderr)
    except EvfarmUserError as exc:
        print(f"evfarm roofline: {exc}", file=sys.stderr)
        return 2
    return 0
