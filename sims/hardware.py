"""Virtual devices for the roofline model: memory bandwidth, peak OPS per data type, on-chip buffer.

Paper: "LLM Inference Unveiled: Survey and Roofline Model Insights" (Yuan et al., arXiv 2402.16363),
official code hahnyuan/LLM-Viewer `hardwares/hardware_params.py` (snapshot 472f71f).

Which parts follow what:
- [code] The data-centre GPU and `intel_13900k` entries copy LLM-Viewer's numbers *unchanged*,
  including its conventions: peaks are dense OPS ("the OPS = sparse OPS / 2"), bandwidth in B/s,
  and the on-chip buffer is the GPU's total register file (SM count x 256 KB, in units of 1e3 B).
  Its known oddities are kept so that compat mode reproduces it: H100 bandwidth 3.072 TB/s (the
  SXM datasheet says 3.35 TB/s) and no INT8 peak for `intel_13900k`.
- [inferred] The edge devices the lab deploys to (Jetson Orin, Raspberry Pi 5, Apple M2) are our
  own entries. Each cites its datasheet and says which numbers are derived rather than quoted; they
  follow LLM-Viewer's conventions (dense peaks, register-file buffer for GPUs, last-level caches
  summed for CPUs).

Units: `bandwidth` in bytes per second, `peaks` in operations per second (one multiply-add = 2
OPs), `onchip_buffer` in bytes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from methods.errors import ConfigError, UnknownNameError, did_you_mean
from methods.registry import Registry

DTYPES = ("FP32", "FP16", "INT8")


@dataclass(frozen=True)
class Device:
    """One virtual device: a roof (peak OPS per data type) and a slope (memory bandwidth)."""

    name: str
    bandwidth: float
    peaks: Mapping[str, float]
    onchip_buffer: float
    source: str
    kind: str = "gpu"
    note: str = ""
    version: int = 1

    def __post_init__(self) -> None:
        if not self.bandwidth > 0:
            raise ConfigError(f"device {self.name!r}: bandwidth must be > 0 B/s, got {self.bandwidth!r}.")
        unknown = set(self.peaks) - set(DTYPES)
        if unknown:
            raise ConfigError(
                f"device {self.name!r}: peak data types must be among {DTYPES}, got {sorted(unknown)}."
            )
        if any(not v > 0 for v in self.peaks.values()):
            raise ConfigError(f"device {self.name!r}: every peak must be > 0 OPS, got {dict(self.peaks)}.")
        if "FP16" not in self.peaks:
            raise ConfigError(f"device {self.name!r}: an FP16 peak is required (LLM-Viewer's default roof).")
        # A read-only view, so a shared table entry cannot be edited by accident.
        object.__setattr__(self, "peaks", MappingProxyType(dict(self.peaks)))

    def peak(self, dtype: str) -> float:
        """Peak OPS for `dtype` ("FP32", "FP16" or "INT8"); a clear error when the table lacks it."""
        try:
            return self.peaks[dtype]
        except KeyError:
            raise ConfigError(
                f"device {self.name!r} has no {dtype} peak (it lists {sorted(self.peaks)}); "
                f"use mode='corrected' (falls back to FP16) or pick another device."
            ) from None

    def turning_point(self, dtype: str = "FP16") -> float:
        """Arithmetic intensity (OPs per byte) where the memory roof meets the compute roof."""
        return self.peak(dtype) / self.bandwidth

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bandwidth": self.bandwidth,
            "peaks": dict(self.peaks),
            "onchip_buffer": self.onchip_buffer,
            "source": self.source,
            "kind": self.kind,
            "note": self.note,
            "version": self.version,
        }


HARDWARE: Registry[Device] = Registry("device")

_LLMV = "hahnyuan/LLM-Viewer hardwares/hardware_params.py (snapshot 472f71f)"


def _add(device: Device) -> Device:
    HARDWARE.register(device.name)(device)
    return device


def _gpu(name: str, bw: float, fp16: float, int8: float, buf: float, note: str = "") -> Device:
    return _add(Device(name, bw, {"FP16": fp16, "INT8": int8}, buf, source=_LLMV, note=note))


# ---- LLM-Viewer's table, numbers unchanged [code] ------------------------------------------
_gpu("nvidia_V100", 900e9, 112e12, 62e12, 20480e3, note="INT8 < FP16: no INT8 tensor cores (DP4A)")
_gpu("nvidia_A6000", 768e9, 309.677e12 / 2, 309.7e12, 21504e3)
_gpu("nvidia_A100", 1555e9, 312e12, 624e12, 27648e3, note="same entry as nvidia_A100_40G")
_gpu("nvidia_A100_40G", 1555e9, 312e12, 624e12, 27648e3)
_gpu("nvidia_A100_80G", 2039e9, 312e12, 624e12, 27648e3)
_gpu("nvidia_A800_80G_SXM", 2039e9, 312e12, 624e12, 27648e3)
_gpu("nvidia_A40", 696e9, 149.7e12, 299.3e12, 21504e3, note="FP16 fixed upstream (issue #7)")
_gpu("nvidia_H100", 3072e9, 1979e12 / 2, 3958e12 / 2, 33792e3,
     note="same entry as nvidia_H100_SXM; bandwidth 3.072 TB/s as in LLM-Viewer (datasheet: 3.35 TB/s)")
_gpu("nvidia_H100_SXM", 3072e9, 1979e12 / 2, 3958e12 / 2, 33792e3,
     note="bandwidth 3.072 TB/s as in LLM-Viewer (datasheet: 3.35 TB/s)")
_gpu("nvidia_H100_PCIe", 2048e9, 1513e12 / 2, 3026e12 / 2, 29184e3)
_gpu("nvidia_L40", 864e9, 181e12, 362e12, 36352e3)
_add(Device(
    "intel_13900k", 89.6e9, {"FP16": 8 * 5.4e9 * 32}, 36e6, source=_LLMV, kind="cpu",
    note="LLM-Viewer lists no INT8 peak: compat mode raises for all-bits<=8 runs, corrected mode "
         "falls back to the FP16 peak",
))

# ---- edge devices the lab deploys to [inferred entries, datasheet numbers] ----------------
_add(Device(
    "nvidia_jetson_agx_orin_64g", 204.8e9,
    {"FP32": 5.3e12, "FP16": 170e12 / 4, "INT8": 170e12 / 2}, 16 * 256e3,
    source="NVIDIA Jetson AGX Orin Series Technical Brief v1.2 (2022): GPU 2048 CUDA / 64 Tensor "
           "cores, 170 sparse INT8 TOPS (GPU only, DLAs excluded), 5.3 FP32 TFLOPS, 204.8 GB/s LPDDR5",
    kind="soc",
    note="INT8 = sparse/2 (LLM-Viewer convention); FP16 = INT8/2 (Ampere tensor-core ratio) "
         "[inferred]; buffer = 16 SMs x 256 KB register file",
))
_add(Device(
    "nvidia_jetson_orin_nano_8g", 68e9,
    {"FP32": 1.28e12, "FP16": 40e12 / 4, "INT8": 40e12 / 2}, 8 * 256e3,
    source="NVIDIA Jetson Orin Nano Series Data Sheet DS-11105-001 (2023): 1024 CUDA / 32 Tensor "
           "cores, 40 sparse INT8 TOPS, 68 GB/s LPDDR5 (128-bit)",
    kind="soc",
    note="INT8 = sparse/2, FP16 = INT8/2 [inferred]; FP32 = 1024 cores x 2 x 625 MHz [inferred]; "
         "buffer = 8 SMs x 256 KB",
))
_add(Device(
    "nvidia_jetson_orin_nano_super", 102e9,
    {"FP16": 67e12 / 4, "INT8": 67e12 / 2}, 8 * 256e3,
    source="NVIDIA Jetson Orin Nano Super Developer Kit announcement (Dec 2024): 67 sparse INT8 "
           "TOPS, 102 GB/s",
    kind="soc",
    note="INT8 = sparse/2, FP16 = INT8/2 [inferred]; buffer = 8 SMs x 256 KB",
))
_add(Device(
    "raspberry_pi5_cpu", 4267e6 * 4,
    {"FP32": 4 * 2.4e9 * 16, "FP16": 4 * 2.4e9 * 32, "INT8": 4 * 2.4e9 * 64},
    4 * 512 * 1024 + 2 * 1024 * 1024,
    source="Raspberry Pi 5 product brief (BCM2712: 4x Cortex-A76 @ 2.4 GHz, 32-bit LPDDR4X-4267); "
           "Arm Cortex-A76 Software Optimization Guide (two 128-bit ASIMD FMA pipes, SDOT)",
    kind="cpu",
    note="bandwidth = 4267 MT/s x 4 B; peaks derived from 2 x 128-bit pipes per core: FP32 16, "
         "FP16 32, INT8 (SDOT) 64 OPs/cycle/core [inferred]; buffer = 4 x 512 KB L2 + 2 MB L3",
))
_add(Device(
    "apple_m2_gpu", 100e9,
    {"FP32": 3.6e12, "FP16": 3.6e12, "INT8": 3.6e12}, 8 * 1024 * 1024,
    source="Apple newsroom 'Apple unveils M2' (June 2022): 100 GB/s unified memory, 3.6 TFLOPS "
           "10-core GPU, 15.8 TOPS Neural Engine",
    kind="soc",
    note="FP16 and INT8 run at the FP32 rate on this GPU (no faster low-precision path) "
         "[inferred]; buffer = 8 MB system-level cache [inferred]",
))
_add(Device(
    "apple_m2_ane", 100e9,
    {"FP16": 15.8e12, "INT8": 15.8e12}, 8 * 1024 * 1024,
    source="Apple newsroom 'Apple unveils M2' (June 2022): 15.8 TOPS 16-core Neural Engine, "
           "100 GB/s unified memory",
    kind="npu",
    note="Apple quotes one figure; we use it for FP16 and INT8 [inferred]",
))


def device_names() -> list[str]:
    return HARDWARE.names()


def get_device(name: str | Device) -> Device:
    """The device called `name` (exact, then case-insensitive); UnknownNameError lists near names."""
    if isinstance(name, Device):
        return name
    if name in HARDWARE:
        return HARDWARE.get(name)
    folded = {n.lower(): n for n in HARDWARE.names()}
    for candidate in (name.lower(), f"nvidia_{name.lower()}"):
        if candidate in folded:
            return HARDWARE.get(folded[candidate])
    raise UnknownNameError(
        f"Unknown device {name!r}. {did_you_mean(name, HARDWARE.names())} "
        f"Known devices: {', '.join(HARDWARE.names())}."
    )
