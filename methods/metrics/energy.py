"""Energy of one forward pass of a spiking or an ANN network, from counted operations and
measured firing rates: the convention of the spike-driven transformer line.

Constants (one place, change them here or pass an `EnergyConstants`):

=========  ========  ===========================================================================
constant   value     source
=========  ========  ===========================================================================
E_MAC      4.6 pJ    one 32-bit float multiply-accumulate at 45 nm: 3.7 pJ mult + 0.9 pJ add,
                     M. Horowitz, "Computing's energy problem", ISSCC 2014; used as E_MAC by
                     Spikformer (arXiv 2209.15425), Spike-driven Transformer (arXiv 2307.01694)
                     and the SLTNet line (reference brief §3.4) [paper: those papers]
E_AC       0.9 pJ    one 32-bit float add at 45 nm (Horowitz 2014), the cost of a synaptic
                     operation (a spike selects a weight to accumulate) [paper: same]
=========  ========  ===========================================================================

Formula [paper, convention]: E_SNN = E_MAC · (float MACs) + E_AC · Σ_l SOPs_l, with
SOPs_l = fr_l · T · FLOPs_l (fr_l the fraction of non-zero entries in the spike tensor feeding
layer l, FLOPs_l its MACs per time step); E_ANN = E_MAC · (all MACs).

How layers are classified [ours, measured not assumed]: forward hooks count every Conv1d / Conv2d
/ ConvTranspose2d / Linear (MACs from the actual shapes, all time steps) and look at the tensor
that feeds it. A binary input (all entries 0 or 1) is spike-driven: its MACs become
SOPs = fr · MACs at E_AC. A real-valued input (the voxel grid of the first layer, but also the
membrane-level sums inside SLTNet's blocks, which feed convs without a LIF in between) costs
E_MAC per MAC under `float_inputs="mac"` (default). `float_inputs="convention"` reproduces the
papers' accounting instead: only the first counted layer is float; every later layer counts
fr · MACs at E_AC whatever feeds it. Non-synaptic float work a module declares by setting
`module.float_ops` in its forward (gates, ECA, bilinear resizes) is charged at E_MAC, and
`module.ac_ops` (e.g. SDSA's masked column sum over binary K ⊙ V) at E_AC (E_MAC for an ANN).
BatchNorm is taken as folded into the preceding conv at inference (not counted) [inferred].
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from methods.config_dict import ConfigDict
from methods.errors import ConfigError

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
SYNAPTIC = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@dataclass(frozen=True)
class EnergyConstants(ConfigDict):
    version: int = 1
    e_mac_pj: float = E_MAC_PJ
    e_ac_pj: float = E_AC_PJ
    float_inputs: str = "mac"

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ConfigError(f"EnergyConstants version must be 1; received {self.version}.")
        if not (self.e_mac_pj > 0 and self.e_ac_pj > 0):
            raise ConfigError(f"Energies per op must be > 0 pJ; received {self.e_mac_pj}, {self.e_ac_pj}.")
        if self.float_inputs not in ("mac", "convention"):
            raise ConfigError(f"float_inputs must be 'mac' or 'convention'; received {self.float_inputs!r}.")


@dataclass(frozen=True)
class LayerOps:
    """One synaptic layer call: dense MACs (all time steps), its input's non-zero fraction, whether
    that input was binary, and how it was charged (SOPs at E_AC or float MACs at E_MAC)."""

    name: str
    macs: int
    input_rate: float
    binary_input: bool
    sops: float
    float_macs: float


@dataclass(frozen=True)
class EnergyReport:
    mode: str
    layers: list[LayerOps]
    extra_float_ops: float
    extra_ac_ops: float
    firing_rates: dict[str, float] = field(default_factory=dict)
    constants: EnergyConstants = field(default_factory=EnergyConstants)
    output: Any = field(default=None, repr=False, compare=False)  # what the measured forward returned

    @property
    def macs(self) -> int:
        """All synaptic MACs of the pass, dense (what an ANN of the same shape computes)."""
        return sum(layer.macs for layer in self.layers)

    @property
    def sops(self) -> float:
        return sum(layer.sops for layer in self.layers) + (self.extra_ac_ops if self.mode == "snn" else 0.0)

    @property
    def float_macs(self) -> float:
        ac_as_mac = self.extra_ac_ops if self.mode == "ann" else 0.0
        return sum(layer.float_macs for layer in self.layers) + self.extra_float_ops + ac_as_mac

    @property
    def energy_pj(self) -> float:
        return self.constants.e_mac_pj * self.float_macs + self.constants.e_ac_pj * self.sops

    @property
    def energy_uj(self) -> float:
        return self.energy_pj * 1e-6

    @property
    def mean_firing_rate(self) -> float:
        rates = list(self.firing_rates.values())
        return float(sum(rates) / len(rates)) if rates else float("nan")


def layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one call, from the shapes (every time step and batch entry)."""
    if isinstance(module, nn.ConvTranspose2d):  # every input entry scatters into out/groups · k·k outputs
        k = module.kernel_size[0] * module.kernel_size[1]
        return inp.numel() * (module.out_channels // module.groups) * k
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        k = 1
        for size in module.kernel_size:
            k *= size
        return out.numel() * (module.in_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    kinds = [c.__name__ for c in SYNAPTIC]
    raise ConfigError(f"No MAC rule for {type(module).__name__}; expected one of {kinds}.")


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def measure_energy(model: nn.Module, inputs: Any, mode: str = "snn", constants: EnergyConstants | None = None,
                   spiking_types: Sequence[type] = ()) -> EnergyReport:
    """Run `model(inputs)` once in eval mode without gradients and account its energy (docstring).

    mode "snn": binary-fed layers as SOPs; "ann": every op at E_MAC. `spiking_types`: module
    classes whose mean output is reported as that module's firing rate.
    """
    if mode not in ("snn", "ann"):
        raise ConfigError(f"mode must be 'snn' or 'ann'; received {mode!r}.")
    constants = constants or EnergyConstants()
    layers: list[LayerOps] = []
    rates: dict[str, float] = {}
    names = {m: n for n, m in model.named_modules()}
    extra = {"float": 0.0, "ac": 0.0}

    def on_layer(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        inp = args[0]
        macs = layer_macs(module, inp, out)
        rate = float((inp != 0).float().mean())
        binary = _is_binary(inp)
        spike_driven = mode == "snn" and (binary or (constants.float_inputs == "convention" and layers))
        sops = rate * macs if spike_driven else 0.0
        layers.append(LayerOps(names[module], macs, rate, binary, sops, 0.0 if spike_driven else float(macs)))

    def on_spiking(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        rates[names[module]] = float(out.float().mean())

    def on_any(module: nn.Module, args: tuple, out: Any) -> None:
        extra["float"] += float(module.__dict__.pop("float_ops", 0))
        extra["ac"] += float(module.__dict__.pop("ac_ops", 0))

    handles = []
    for module in model.modules():
        if isinstance(module, SYNAPTIC):
            handles.append(module.register_forward_hook(on_layer))
        if spiking_types and isinstance(module, tuple(spiking_types)):
            handles.append(module.register_forward_hook(on_spiking))
        handles.append(module.register_forward_hook(on_any))
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            output = model(*(inputs if isinstance(inputs, tuple) else (inputs,)))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in flags.items():
            module.training = training
    return EnergyReport(mode, layers, extra["float"], extra["ac"], rates, constants, output)
