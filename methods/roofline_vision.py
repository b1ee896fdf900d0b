"""Roofline analysis of a real torch vision module (timm ViT, diffusers U-Net, SAM, ...) by tracing it.

Paper: "LLM Inference Unveiled: Survey and Roofline Model Insights" (Yuan et al., arXiv 2402.16363);
LLM-Viewer (hahnyuan/LLM-Viewer) analyses LLMs from configs only. Extending the same per-node
roofline to any module by tracing one forward pass is our own design [inferred]; it reuses the
roofline, the peak rule and the node cost conventions of `methods/roofline.py` [code].

How it traces: a `TorchFunctionMode` sees every torch function call of one forward pass (under
`no_grad`); forward pre/post hooks keep a stack of module names, so each call is attributed to the
innermost module that made it. Only the calls below are costed (views, reshapes, dropout in eval
and other bookkeeping move no data in a fused runtime and are ignored) [inferred]:

| call | OPs | weight bytes | activation bytes |
| --- | --- | --- | --- |
| linear | 2·N·ic·oc (N rows) | ic·oc·wB (bias ignored, as LLM-Viewer) | load N·ic·aB, store N·oc·aB |
| conv1d/2d/3d | 2·out·(ic/groups)·k | weight numel·wB | load in, store out |
| conv_transpose | 2·in·(oc/groups)·k | weight numel·wB | load in, store out |
| matmul, bmm, mm (+ addmm, baddbmm) | 2·out·K (+ out) | 0 | load both operands (+ bias), store out |
| einsum | 2·out·(product of contracted sizes) | 0 | load the operands, store out |
| scaled_dot_product_attention | 2·BH·L·S·(E+Ev) + 5·BH·L·S | 0 | fused: load q, k, v, store o |
| (unfused: `fused_attention=False`) | same | 0 | + 4·BH·L·S·aB: scores out, softmax in/out, probs in |
| softmax | 5 per element | 0 | load = store = numel |
| layer/group/batch/rms norm | 7 per element (LLM-Viewer's norm) | 0 | load = store = numel |
| gelu 8, silu 4, sigmoid 4, relu 1 per element | | 0 | load = store = numel |
| add, sub, mul, div | 1 per output element | 0 | load each tensor operand, store out |
| cat, interpolate | 0 / 1 per output element | 0 | load inputs, store out |

Bit widths: `bits` maps module names to (w_bits, a_bits); the longest matching name prefix wins
(so {"blocks.3": (4, 8)} covers every module under blocks.3), else `default_bits`. Each node picks
its roof with LLM-Viewer's rule applied per node: INT8 when its bits are all <= 8 [inferred].

`cached_step_cost` / `cache_schedule`: for feature caching in diffusion U-Nets (DeepCache-style,
"DeepCache: Accelerating Diffusion Models for Free", arXiv 2312.00858), a cached step skips every
node under the given module names; the schedule alternates one full step and `interval - 1`
cached steps [inferred].
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from methods.errors import ConfigError, UnknownNameError, did_you_mean
from methods.roofline import OpCost, check_bits, check_mode, cost_row, select_peak, sum_rows
from methods.roofline_types import Device, require_device

ACT_OPS = {"gelu": 8, "silu": 4, "sigmoid": 4, "relu": 1}
CONVS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
NORMS = {"layer_norm", "group_norm", "batch_norm", "rms_norm", "instance_norm"}
MATMULS = {"matmul", "__matmul__", "bmm", "mm", "addmm", "baddbmm"}
ELEMENTWISE = {"add", "sub", "mul", "div", "__add__", "__sub__", "__mul__", "__truediv__",
               "__iadd__", "__radd__", "__rmul__"}


def _numel(x: Any) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else 0


def _einsum_contracted(equation: str, operands: Sequence[torch.Tensor]) -> int:
    """Product of the sizes of the indices summed over (those absent from the output)."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if not arrow:  # implicit output: the indices that appear exactly once, alphabetical (numpy's rule)
        rhs = "".join(sorted(c for c in set(lhs) if c.isalpha() and lhs.count(c) == 1))
    sizes: dict[str, int] = {}
    for term, op in zip(terms, operands, strict=False):
        head, dots, tail = term.partition("...")
        dims = list(op.shape)
        for letter, size in zip(head, dims, strict=False):
            sizes[letter] = size
        if dots:
            for letter, size in zip(tail, dims[len(dims) - len(tail):], strict=False):
                sizes[letter] = size
    return math.prod(size for letter, size in sizes.items() if letter not in rhs)


@dataclass
class _Call:
    """One costed call: what ran, in which module, with which tensors (shapes only are used)."""

    module: str
    op: str
    cost: OpCost


def _cost(op: str, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any, wB: float, aB: float,
          fused_attention: bool) -> OpCost | None:
    """The OPs and bytes of one intercepted call, or None when the call is not costed."""
    x = args[0] if args else None
    out_n = _numel(out)
    if op == "linear":
        w = args[1] if len(args) > 1 else kwargs["weight"]
        oc, ic = w.shape
        n = x.numel() // ic
        return OpCost(op, 2 * n * ic * oc, ic * oc * wB, n * ic * aB, n * oc * aB)
    if op in CONVS:
        w = args[1] if len(args) > 1 else kwargs["weight"]
        ksize = math.prod(w.shape[2:])
        macs = x.numel() * w.shape[1] * ksize if "transpose" in op else out_n * w.shape[1] * ksize
        return OpCost(op, 2 * macs, w.numel() * wB, x.numel() * aB, out_n * aB)
    if op in MATMULS:
        a_, b_ = (args[1], args[2]) if op in ("addmm", "baddbmm") else (args[0], args[1])
        extra = out_n if op in ("addmm", "baddbmm") else 0
        load = (_numel(a_) + _numel(b_) + (_numel(args[0]) if extra else 0)) * aB
        return OpCost(op, 2 * out_n * a_.shape[-1] + extra, 0, load, out_n * aB)
    if op == "einsum":
        operands = list(args[1]) if len(args) == 2 and isinstance(args[1], list | tuple) else list(args[1:])
        load = sum(_numel(t) for t in operands) * aB
        return OpCost(op, 2 * out_n * _einsum_contracted(args[0], operands), 0, load, out_n * aB)
    if op == "scaled_dot_product_attention":
        q, k, v = args[0], args[1], args[2]
        L, E, S, Ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
        bh = q.numel() // (L * E)
        scores = bh * L * S
        ops = 2 * scores * E + 2 * scores * Ev + 5 * scores
        load = (q.numel() + k.numel() + v.numel()) * aB + (0 if fused_attention else 2 * scores * aB)
        store = out_n * aB + (0 if fused_attention else 2 * scores * aB)
        return OpCost(op, ops, 0, load, store)
    if op == "softmax":
        return OpCost(op, 5 * out_n, 0, out_n * aB, out_n * aB)
    if op in NORMS:
        return OpCost(op, 7 * out_n, 0, out_n * aB, out_n * aB)
    if op in ACT_OPS:
        return OpCost(op, ACT_OPS[op] * out_n, 0, out_n * aB, out_n * aB)
    if op in ELEMENTWISE:
        operands = [a for a in (*args[:2], kwargs.get("other")) if isinstance(a, torch.Tensor)]
        return OpCost(op, out_n, 0, sum(a.numel() for a in operands) * aB, out_n * aB)
    if op == "cat":
        return OpCost(op, 0, 0, out_n * aB, out_n * aB)
    if op == "interpolate":
        return OpCost(op, out_n, 0, x.numel() * aB, out_n * aB)
    return None


class _Tracer(TorchFunctionMode):
    """Records costed torch calls, attributed to the innermost running module."""

    def __init__(self, stack: list[str], bits_for, fused_attention: bool) -> None:
        super().__init__()
        self.stack, self.bits_for, self.fused = stack, bits_for, fused_attention
        self.calls: list[_Call] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # the mode is off inside its own handler: no double counting
        op = getattr(func, "__name__", "")
        if isinstance(out, torch.Tensor):
            module = self.stack[-1] if self.stack else ""
            w_bits, a_bits = self.bits_for(module)
            cost = _cost(op, args, kwargs, out, w_bits / 8, a_bits / 8, self.fused)
            if cost is not None:
                self.calls.append(_Call(module, op, cost))
        return out


def _bits_lookup(model: nn.Module, bits: Mapping[str, tuple[int, int]], default: tuple[int, int]):
    names = {n for n, _ in model.named_modules()}
    for key, value in bits.items():
        if key not in names:
            raise UnknownNameError(
                f"bits names module {key!r}, which the model does not have. {did_you_mean(key, names)}"
            )
        if not (isinstance(value, Sequence) and len(value) == 2):
            raise ConfigError(f"bits[{key!r}] must be a (w_bits, a_bits) pair, got {value!r}.")
        check_bits(f"bits[{key!r}] w_bits", value[0])
        check_bits(f"bits[{key!r}] a_bits", value[1])
    check_bits("default w_bits", default[0])
    check_bits("default a_bits", default[1])

    def bits_for(module: str) -> tuple[int, int]:
        parts = module.split(".") if module else []
        for n in range(len(parts), -1, -1):  # longest prefix first; "" is the root module
            key = ".".join(parts[:n])
            if key in bits:
                return tuple(bits[key])
        return default

    return bits_for


def trace_costs(model: nn.Module, inputs: Any, bits: Mapping[str, tuple[int, int]] | None = None,
                default_bits: tuple[int, int] = (16, 16), fused_attention: bool = True) -> list[_Call]:
    """Run one forward pass of `model` on `inputs` (a tuple of args or a dict of kwargs) and cost it."""
    bits_for = _bits_lookup(model, bits or {}, default_bits)
    stack: list[str] = []

    def pop(_module: nn.Module, _args: Any, _out: Any) -> None:
        stack.pop()  # a forward hook must return None, or it would replace the module's output

    handles = []
    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(lambda _m, _a, n=name: stack.append(n) and None))
        handles.append(mod.register_forward_hook(pop))
    tracer = _Tracer(stack, bits_for, fused_attention)
    try:
        with torch.no_grad(), tracer:
            if isinstance(inputs, Mapping):
                model(**inputs)
            else:
                model(*(inputs if isinstance(inputs, tuple | list) else (inputs,)))
    finally:
        for h in handles:
            h.remove()
    return tracer.calls


@dataclass
class VisionReport:
    """Per-call rows of one forward pass, with totals."""

    device: Device
    mode: str
    rows: list[dict[str, Any]]
    totals: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"device": self.device.name, "mode": self.mode,
                **{f"forward_{k}": v for k, v in self.totals["forward"].items()}}

    def payload(self) -> dict[str, Any]:
        return {"device": self.device.name, "mode": self.mode, "rows": self.rows, "totals": self.totals}


def _row_name(call: _Call, leaf: bool, seen: dict[str, int]) -> str:
    base = call.module if (leaf and call.module) else f"{call.module or '<root>'}:{call.op}"
    seen[base] = seen.get(base, 0) + 1
    return base if seen[base] == 1 else f"{base}#{seen[base]}"


def analyze_module(model: nn.Module, inputs: Any, device: Device,
                   bits: Mapping[str, tuple[int, int]] | None = None,
                   default_bits: tuple[int, int] = (16, 16),
                   mode: str = "corrected", fused_attention: bool = True) -> VisionReport:
    """Trace `model` once and put every costed call on `device`'s roofline.

    `device` is a `Device` object; resolve a name with `sims.hardware.get_device` first.
    """
    dev, mode = require_device(device, "analyze_module"), check_mode(mode)
    calls = trace_costs(model, inputs, bits, default_bits, fused_attention)
    bits_for = _bits_lookup(model, bits or {}, default_bits)
    leaves = {n for n, m in model.named_modules() if not any(True for _ in m.children())}
    seen: dict[str, int] = {}
    rows = []
    for call in calls:
        w, a = bits_for(call.module)
        weighted = call.cost.load_weight > 0
        dtype, peak = select_peak(dev, w if weighted else a, a, a, mode)
        cost = dataclasses.replace(call.cost, name=_row_name(call, call.module in leaves, seen))
        rows.append(cost_row("forward", cost, dev.bandwidth, peak, module=call.module, op=call.op,
                             w_bits=w if weighted else None, a_bits=a, peak_dtype=dtype))
    return VisionReport(dev, mode, rows, {"forward": sum_rows(rows)})


def _under(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def cached_step_cost(report: VisionReport, skipped: Iterable[str]) -> dict[str, float]:
    """Totals of one cached step: every node under a module in `skipped` is reused, not run."""
    skipped = set(skipped)
    modules = {r["module"] for r in report.rows}
    for name in skipped:
        if not any(m == name or m.startswith(name + ".") for m in modules):
            raise UnknownNameError(
                f"skipped module {name!r} ran no costed node. {did_you_mean(name, modules)}"
            )
    return sum_rows(r for r in report.rows if not _under(r["module"], skipped))


def cache_schedule(report: VisionReport, skipped: Iterable[str], num_steps: int,
                   interval: int) -> list[dict[str, Any]]:
    """Per-step cost of `num_steps` sampler steps: full at steps 0, interval, 2·interval, ...; cached
    otherwise. `interval` 1 means no caching."""
    for key, value in (("num_steps", num_steps), ("interval", interval)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}.")
    full, cached = report.totals["forward"], cached_step_cost(report, skipped)
    return [{"step": i, "cached": i % interval != 0, **(cached if i % interval else full)}
            for i in range(num_steps)]
