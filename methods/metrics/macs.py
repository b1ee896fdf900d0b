"""MAC count of one forward pass of any `nn.Module`, with a per-module and per-operator breakdown.

Counting is done by PyTorch's `torch.utils.flop_counter.FlopCounterMode`, which intercepts the
aten matrix operators (mm, addmm, bmm, baddbmm, convolution, scaled-dot-product attention, ...)
and counts 2 FLOPs per multiply-accumulate; MACs = FLOPs / 2. Element-wise operators (bias adds
outside addmm, BatchNorm, activations, softmax outside attention, pooling) are not counted, which
is the usual convention of MAC tables for CNNs and ViTs (e.g. the "MACs" columns in timm/fvcore
style reports) [inferred: our choice of convention]. MAC counts feed the roofline
(LLM-Viewer, Yuan et al., arXiv:2402.16363) and the PTQ cost columns.

The forward pass runs under `torch.no_grad()` with every module temporarily in eval mode (so
BatchNorm running statistics are not updated by counting), then each module's training flag is
restored [inferred].
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from methods.errors import ConfigError


@dataclass(frozen=True)
class MacReport:
    """MACs of one forward pass.

    total: all counted MACs.
    by_module: module path as in `model.named_modules()` ("" is the whole model) → MACs of that
        module including its children; only modules that ran a counted operator appear.
    by_op: aten operator name ("convolution", "addmm", "mm", "bmm", ...) → MACs.
    """

    total: int
    by_module: dict[str, int]
    by_op: dict[str, int]

    def leaf_modules(self) -> dict[str, int]:
        """by_module restricted to the entries with no counted child (no double counting)."""
        names = list(self.by_module)
        return {n: v for n, v in self.by_module.items()
                if n and not any(o.startswith(n + ".") for o in names)}


def _module_path(tracker_name: str, root_name: str) -> str:
    """FlopCounterMode names modules '<RootClass>.<path>'; map back to named_modules() paths."""
    if tracker_name == root_name:
        return ""
    prefix = root_name + "."
    return tracker_name[len(prefix):] if tracker_name.startswith(prefix) else tracker_name


def count_macs(model: nn.Module, inputs: Any, **kwargs: Any) -> MacReport:
    """MACs of `model(*inputs, **kwargs)` (`inputs` a tensor, or a tuple/list of positional args).

    >>> count_macs(nn.Linear(3, 4), torch.zeros(2, 3)).total
    24
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"count_macs needs a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(inputs, Mapping):
        raise ConfigError("pass keyword inputs as keyword arguments: count_macs(model, (), **inputs).")
    args = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
    flags = {m: m.training for m in model.modules()}
    counter = FlopCounterMode(display=False, depth=None)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(*args, **kwargs)
    finally:
        for module, training in flags.items():
            module.training = training
    root = type(model).__name__
    by_module: dict[str, int] = {}
    by_op: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        macs = sum(int(v) for v in ops.values()) // 2
        if name == "Global":
            for op, flops in ops.items():
                op_name = getattr(op, "__name__", str(op)).split(".")[-1]
                by_op[op_name] = by_op.get(op_name, 0) + int(flops) // 2
            continue
        by_module[_module_path(name, root)] = macs
    total = int(counter.get_total_flops()) // 2
    return MacReport(total=total, by_module=by_module, by_op=by_op)
