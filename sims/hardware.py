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
OPs), `onchip_buffer` in bytes. The `Device` type lives in `methods/roofline_types.py` (methods take
the object); this module is the table of named devices and `get_device`, which resolves a name.
"""
from __future__ import annotations

from methods.errors import UnknownNameError, did_you_mean
from methods.registry import REPLACE_FIELDS, Registry
from methods.roofline_types import Device

# HARDWARE.create(name, **fields): a copy of that device with some fields replaced.
HARDWARE: Registry[Device] = Registry("device", Device, creator=REPLACE_FIELDS)

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
