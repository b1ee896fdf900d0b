"""bench_int8: the GEMM shapes it times are the U-Net's, the INT8 layer computes the fp32 layer's
function, a tiny run ends with the summary, and `--device cuda` without a GPU is refused (exit 2)."""
from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from methods.metrics.macs import count_macs
from sweeps import bench_int8


def _summary(out: str) -> dict[str, str]:
    last = out.strip().splitlines()[-1]
    assert last.startswith("summary: ")
    return dict(kv.split("=", 1) for kv in last.removeprefix("summary: ").split())


def test_gemm_shapes_account_for_every_linear_and_conv_mac():
    unet = bench_int8.build_unet("tiny")
    x = torch.randn(3, 1, 8, 8)
    layers = bench_int8.gemm_layers(unet, x, 10)
    ops = count_macs(unet, (x, 10)).by_op
    counted = sum(v for k, v in ops.items() if k in ("convolution", "addmm", "mm"))
    assert sum(r["M"] * r["K"] * r["N"] for r in layers) == counted
    by = {r["layer"]: r for r in layers}
    assert (by["time_embedding.linear_1"]["M"], by["time_embedding.linear_1"]["kind"]) == (3, "linear")
    assert by["conv_in"]["K"] == 9 * 1 and by["conv_in"]["M"] == 3 * 8 * 8
    assert any(r["kind"] == "conv1x1" for r in layers)


@pytest.mark.parametrize("layer", [nn.Linear(24, 40), nn.Conv2d(24, 40, 1)])
def test_int8_layer_matches_fp32_layer(layer, monkeypatch):
    torch.manual_seed(0)
    q = bench_int8.Int8Matmul(layer)
    x = torch.randn(2, 24, 5, 3) if isinstance(layer, nn.Conv2d) else torch.randn(7, 3, 24)
    calls, real = [], torch._int_mm
    monkeypatch.setattr(torch, "_int_mm", lambda a, b: calls.append((a.dtype, b.dtype)) or real(a, b))
    with torch.no_grad():
        ref, got = layer(x), q(x)
    assert calls == [(torch.int8, torch.int8)]  # the product really runs in the INT8 kernel
    assert got.shape == ref.shape
    rel = float((got - ref).norm() / ref.norm())
    assert 1e-5 < rel < 0.02  # quantized (not a float passthrough), and close to the fp32 layer
    assert q.wq.dtype == torch.int8


def test_quantize_int8_replaces_exactly_the_linear_and_1x1_layers():
    unet = bench_int8.build_unet("tiny")
    q, names = bench_int8.quantize_int8(unet)
    want = [n for n, m in unet.named_modules()
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))]
    assert names == want and all(isinstance(q.get_submodule(n), bench_int8.Int8Matmul) for n in names)
    assert isinstance(unet.get_submodule(names[0]), nn.Linear)  # the original is untouched


def test_tiny_run_ends_with_the_kernel_factor(tmp_path, capsys):
    rc = bench_int8.main(["--out", str(tmp_path), "--run-id", "t", "--no-progress", "--set", "unet=tiny",
                          "--set", "repeats=3", "--set", "inner=1", "--set", "warmup=0",
                          "--set", "step_inner=1", "--set", "conv3x3=false"])
    s = _summary(capsys.readouterr().out)
    assert rc == 0 and s["kernel"] in bench_int8.KERNELS and float(s["int8_speedup"]) > 0
    assert float(s["int8_speedup_lo"]) <= float(s["int8_speedup"]) <= float(s["int8_speedup_hi"])
    run = tmp_path / "bench_int8" / "t"
    for name in ("kernels", "shapes", "factor", "whole_step", "claims"):
        assert (run / f"{name}.csv").is_file(), name
    steps = {r["variant"]: r for r in csv.DictReader((run / "whole_step.csv").open())}
    assert float(steps["fp32_b"]["rel_err_vs_fp32"]) == 0.0
    if "w8a8_int_mm" in steps:
        assert 0 < float(steps["w8a8_int_mm"]["rel_err_vs_fp32"]) < 0.05
        assert 0 < float(steps["w8a8_int_mm"]["int8_mac_share"]) < 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: --device cuda runs")
def test_device_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    assert bench_int8.main(["--out", str(tmp_path), "--device", "cuda", "--set", "unet=tiny"]) == 2
    err = capsys.readouterr().err
    assert "CUDA" in err and "--device cpu" in err and "Traceback" not in err


def test_cpu_clock_ignores_time_the_thread_does_not_run():
    import time

    nap = lambda: time.sleep(0.03)  # noqa: E731 - off the CPU, as a preempted kernel
    assert bench_int8._timer("cpu", 2, 0, "wall")(nap) >= 0.025
    assert bench_int8._timer("cpu", 2, 0, "cpu")(nap) < 0.01


@pytest.mark.parametrize("bad", [["repeats=2"], ['device="tpu"'], ['unet="sd"'], ['clock="tsc"'],
                                 ['clock="cpu"', "threads=2"]])
def test_bad_config_exits_2(tmp_path, bad):
    sets = [w for kv in bad for w in ("--set", kv)]
    assert bench_int8.main(["--out", str(tmp_path), *sets]) == 2
