"""Energy accounting (methods/metrics/energy.py): SOPs from firing rates, MACs by counting."""
from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import layer
from torch import nn

from methods.errors import ConfigError
from methods.metrics.energy import E_AC_PJ, E_MAC_PJ, EnergyConstants, measure_energy
from methods.metrics.macs import count_macs
from methods.sltnet import LIF, SEG_MODELS

torch.set_num_threads(1)


def _binary(shape, rate, seed=0):
    """A 0/1 tensor with exactly `rate` of its entries 1."""
    n = 1
    for s in shape:
        n *= s
    x = torch.zeros(n)
    x[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: int(n * rate)]] = 1.0
    return x.view(shape)


def test_a_layer_with_a_known_firing_rate():
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    x = _binary((1, 4, 6, 6), 0.25)
    macs = 8 * 6 * 6 * 4 * 9  # outputs x (in / groups) x k²
    snn = measure_energy(conv, x, "snn")
    assert snn.macs == macs == 10_368 and snn.layers[0].input_rate == 0.25 and snn.layers[0].binary_input
    assert snn.sops == pytest.approx(0.25 * macs) and snn.float_macs == 0
    assert snn.energy_pj == pytest.approx(0.9 * 0.25 * macs)
    ann = measure_energy(conv, x, "ann")
    assert ann.energy_pj == pytest.approx(4.6 * macs)
    assert ann.energy_pj / snn.energy_pj == pytest.approx(4.6 / (0.9 * 0.25))  # 20.4x at fr = 0.25
    assert (E_MAC_PJ, E_AC_PJ) == (4.6, 0.9)


def test_sops_scale_with_time_steps_in_multi_step_mode():
    conv = layer.Conv2d(2, 3, 1, bias=False, step_mode="m")
    one = measure_energy(conv, _binary((1, 1, 2, 4, 4), 0.5), "snn")
    three = measure_energy(conv, _binary((3, 1, 2, 4, 4), 0.5), "snn")
    assert three.macs == 3 * one.macs == 3 * (3 * 16 * 2)
    assert three.sops == pytest.approx(0.5 * 3 * one.macs)  # SOPs = fr · T · FLOPs


def test_real_valued_inputs_cost_macs_unless_the_paper_convention_is_asked_for():
    net = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.Conv2d(2, 2, 1, bias=False))
    x = torch.rand(1, 2, 4, 4) + 0.1  # real-valued, all non-zero
    strict = measure_energy(net, x, "snn")
    assert [lay.binary_input for lay in strict.layers] == [False, False]
    assert strict.sops == 0 and strict.energy_pj == pytest.approx(4.6 * strict.macs)
    conv = measure_energy(net, x, "snn", EnergyConstants(float_inputs="convention"))
    first, second = conv.layers
    assert first.float_macs == first.macs and second.sops == pytest.approx(second.input_rate * second.macs)
    custom = measure_energy(net, x, "ann", EnergyConstants(e_mac_pj=1.0))
    assert custom.energy_pj == custom.macs


def test_declared_float_and_ac_ops_are_charged():
    class Gate(nn.Module):
        def forward(self, x):
            self.float_ops = 100
            self.ac_ops = 10
            return x

    snn = measure_energy(Gate(), torch.zeros(1), "snn")
    ann = measure_energy(Gate(), torch.zeros(1), "ann")
    assert snn.energy_pj == pytest.approx(100 * 4.6 + 10 * 0.9)
    assert ann.energy_pj == pytest.approx(110 * 4.6)


def test_counted_macs_match_torch_flop_counter_on_sltnet():
    x = torch.randn(1, 5, 32, 48)
    for name in ("sltnet-ann", "sltnet"):
        model = SEG_MODELS.create(name, base=8, blocks=(1, 1, 1), time_steps=2)
        report = measure_energy(model, x, "snn", spiking_types=(LIF,))
        assert report.macs == count_macs(model, x).total  # hooks agree with FlopCounterMode
    assert report.firing_rates and all(0 <= r <= 1 for r in report.firing_rates.values())
    assert report.layers[0].binary_input is False  # the voxel grid feeds the first conv


def test_bad_modes_and_constants_are_refused():
    with pytest.raises(ConfigError, match="mode"):
        measure_energy(nn.Identity(), torch.zeros(1), "hybrid")
    with pytest.raises(ConfigError, match="float_inputs"):
        EnergyConstants(float_inputs="sometimes")
    with pytest.raises(ConfigError, match="> 0 pJ"):
        EnergyConstants(e_ac_pj=0)
