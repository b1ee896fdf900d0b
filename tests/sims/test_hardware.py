"""The device table: LLM-Viewer's numbers unchanged, edge devices cited, lookups and errors."""
from __future__ import annotations

import pytest

from methods.errors import ConfigError, UnknownNameError
from methods.roofline_types import Device
from sims.hardware import HARDWARE, device_names, get_device

# reference systems.md §2.3 (LLM-Viewer hardware_params.py): bandwidth, FP16, INT8, on-chip buffer
LLM_VIEWER = {
    "nvidia_V100": (900e9, 112e12, 62e12, 20480e3),
    "nvidia_A6000": (768e9, 309.677e12 / 2, 309.7e12, 21504e3),
    "nvidia_A100": (1555e9, 312e12, 624e12, 27648e3),
    "nvidia_A100_40G": (1555e9, 312e12, 624e12, 27648e3),
    "nvidia_A100_80G": (2039e9, 312e12, 624e12, 27648e3),
    "nvidia_A800_80G_SXM": (2039e9, 312e12, 624e12, 27648e3),
    "nvidia_A40": (696e9, 149.7e12, 299.3e12, 21504e3),
    "nvidia_H100": (3072e9, 1979e12 / 2, 3958e12 / 2, 33792e3),
    "nvidia_H100_SXM": (3072e9, 1979e12 / 2, 3958e12 / 2, 33792e3),
    "nvidia_H100_PCIe": (2048e9, 1513e12 / 2, 3026e12 / 2, 29184e3),
    "nvidia_L40": (864e9, 181e12, 362e12, 36352e3),
}


@pytest.mark.parametrize("name", sorted(LLM_VIEWER))
def test_llm_viewer_entries_unchanged(name):
    bw, fp16, int8, buf = LLM_VIEWER[name]
    dev = get_device(name)
    assert (dev.bandwidth, dev.peak("FP16"), dev.peak("INT8"), dev.onchip_buffer) == (bw, fp16, int8, buf)


def test_intel_13900k_has_no_int8_peak():
    cpu = get_device("intel_13900k")
    assert cpu.peak("FP16") == 8 * 5.4e9 * 32 and cpu.bandwidth == 89.6e9
    with pytest.raises(ConfigError, match="no INT8 peak"):
        cpu.peak("INT8")


@pytest.mark.parametrize("name", device_names())
def test_every_entry_cites_a_source_and_is_consistent(name):
    dev = HARDWARE.get(name)
    assert len(dev.source) > 20
    assert dev.turning_point() == dev.peak("FP16") / dev.bandwidth
    if "INT8" in dev.peaks and name != "nvidia_V100":  # V100 has no INT8 tensor cores (DP4A only)
        assert dev.peaks["INT8"] >= dev.peaks["FP16"]
    if "FP32" in dev.peaks:
        assert dev.peaks["FP32"] <= dev.peaks["FP16"]
    assert dev.to_dict()["name"] == name and dev.version == 1


def test_edge_devices_present_and_plausible():
    pi, orin, nano, m2 = (get_device(n) for n in ("raspberry_pi5_cpu", "nvidia_jetson_agx_orin_64g",
                                                    "nvidia_jetson_orin_nano_8g", "apple_m2_gpu"))
    assert pi.bandwidth == pytest.approx(17.07e9, rel=1e-3)
    assert pi.peak("FP32") == pytest.approx(153.6e9)
    assert orin.bandwidth == 204.8e9 and orin.peak("INT8") == 85e12
    assert nano.bandwidth < orin.bandwidth < get_device("nvidia_A100").bandwidth
    assert m2.bandwidth == 100e9
    # edge roofs sit far below a data-centre GPU's
    assert max(d.peak("FP16") for d in (pi, orin, nano, m2)) < get_device("nvidia_A100").peak("FP16")


def test_lookup_is_case_insensitive_and_accepts_short_gpu_names():
    assert get_device("NVIDIA_a100") is get_device("nvidia_A100")
    assert get_device("h100_pcie") is get_device("nvidia_H100_PCIe")
    dev = get_device("nvidia_L40")
    assert get_device(dev) is dev


def test_unknown_device_lists_near_names():
    with pytest.raises(UnknownNameError) as err:
        get_device("nvidia_A10O")
    assert "nvidia_A100" in str(err.value) and "Did you mean" in str(err.value)


def test_peaks_are_read_only():
    with pytest.raises(TypeError):
        get_device("nvidia_A100").peaks["FP16"] = 1.0


@pytest.mark.parametrize("kw", [{"bandwidth": 0}, {"peaks": {"FP16": 1e12, "FP8": 2e12}},
                                {"peaks": {"INT8": 1e12}}, {"peaks": {"FP16": -1.0}}])
def test_bad_device_definitions(kw):
    base = {"name": "x", "bandwidth": 1e9, "peaks": {"FP16": 1e12}, "onchip_buffer": 1e6, "source": "test"}
    with pytest.raises(ConfigError):
        Device(**{**base, **kw})
