"""The diffusion-quantization task: FD as the CacheQuant grid computes it, paired and reproducible
trials, cost measurements, and bad input refused before any work."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actors.diffusion_quant_task import (
    DiffusionQuantTask,
    DiffusionQuantTaskConfig,
    DQPoint,
    PeakMemory,
    fd_jackknife_ci,
    method_config,
)
from methods.errors import ConfigError
from methods.metrics.frechet import frechet_distance, gaussian_stats
from methods.quant.unet_units import FPTrajectories

TINY = DiffusionQuantTaskConfig(steps=3, samples=24, trajectories=4, batch_size=4, fd_groups=8)


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return DiffusionQuantTask(TINY)


def _eval(task, **point):
    return task.evaluate(point, seed=7, trial=0, chunk=0, n_chunks=1)


@pytest.mark.slow  # a real task: ~5-10 CPU-seconds each
def test_fd_is_the_cachequant_grids_digit_fd(task):
    from sims.data.digits import load_digits_split
    from sims.zoo import digits_classifier as dc

    x = task.fp_samples
    grid_fd = dc.digit_fd(((x + 1) / 2).clamp(0, 1), load_digits_split("test", 16)[0], task._classifier)
    fd, lo, hi = task.fd_with_ci(x)
    assert fd == pytest.approx(grid_fd, rel=1e-9) and lo < fd < hi and task.fp_fd == pytest.approx(fd)


@pytest.mark.slow  # a real task: ~5-10 CPU-seconds each
def test_trials_are_paired_by_rep_and_reproducible(task):
    a = _eval(task, method="efficientdm", bits="w4a4", dilation=False, calib=8, iters=1)
    b = _eval(task, method="efficientdm", bits="w4a4", dilation=False, calib=8, iters=1)
    assert a["objectives"] == b["objectives"]  # LoRA's random init is seeded per trial
    c0, c1 = task.traj.pick(8, TINY.calib_seed), task.traj.pick(8, TINY.calib_seed + 1)
    assert not torch.equal(c0.x, c1.x) and torch.equal(c0.x, task.traj.pick(8, TINY.calib_seed).x)
    m = a["metrics"]
    assert m["optimizer_steps"] == task.n_units * 1 and m["w_bits"] == 4 and m["a_bits"] == 4
    assert m["mse_lo"] <= a["objectives"]["mse"] <= m["mse_hi"] and m["fd_lo"] < a["objectives"]["fd"]
    assert (
        m["quantize_seconds"] > 0
        and m["quantize_cpu_seconds"] > 0
        and m["peak_mem_kind"] == "rss_delta"
        and m["peak_mem_mb"] >= 0
    )
    assert '"lora_rank": 4' in m["method_config"] and m["torch_version"] == torch.__version__


@pytest.mark.slow  # a real task: ~5-10 CPU-seconds each
def test_dilation_changes_dilatequant_and_ptq_has_no_training(task):
    on = _eval(task, method="dilatequant", bits="w4a4", dilation=True, calib=8, iters=0)
    off = _eval(task, method="dilatequant", bits="w4a4", dilation=False, calib=8, iters=0)
    assert on["metrics"]["wd_unsaturated"] > 0 and "wd_unsaturated" not in off["metrics"]
    assert on["objectives"]["mse"] != off["objectives"]["mse"]
    ptq = _eval(task, method="qdiffusion", bits="w8a8", dilation=False, calib=8, iters=0)
    assert ptq["metrics"]["optimizer_steps"] == 0 and ptq["objectives"]["mse"] < on["objectives"]["mse"]


def test_bad_points_are_refused_before_work():
    with pytest.raises(ConfigError, match="w2..8"):
        DQPoint(method="dilatequant", bits="w16a16")
    with pytest.raises(ConfigError, match="quantized"):
        DQPoint(bits="fp")
    with pytest.raises(ConfigError, match="dilation is DilateQuant"):
        DQPoint(method="efficientdm", dilation=True)
    with pytest.raises(ConfigError, match="method must be one of"):
        DQPoint(method="dilatequnt")
    for method in ("dilatequant", "efficientdm", "diffusion_qat"):  # the method's config refuses it
        with pytest.raises(ConfigError, match="smaller than the batch"):
            method_config(DQPoint(method=method, dilation=False, calib=2), TINY, n_units=9)
    traj = FPTrajectories(tuple(torch.zeros(4, 1, 2, 2) for _ in range(3)), (900, 500, 100))
    with pytest.raises(ConfigError, match="calibration size must lie in 1..12"):
        traj.pick(13)
    assert len(traj.pick(12)) == 12 and sorted(traj.pick(12).idx.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(ConfigError, match="Unknown DQPoint key"):
        DQPoint.from_dict({"method": "qdiffusion", "bit": "w4a4"})


def test_unknown_diffusers_blocks_are_refused_at_load(tmp_path):
    from diffusers import DDIMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "SkipDownBlock2D"),
        up_block_types=("SkipUpBlock2D", "UpBlock2D"),
    )
    unet.save_pretrained(tmp_path / "unet")
    DDIMScheduler().save_pretrained(tmp_path / "scheduler")
    with pytest.raises(ConfigError, match="SkipDownBlock2D"):
        DiffusionQuantTask(DiffusionQuantTaskConfig(model=str(tmp_path), steps=2, samples=2, trajectories=1))


def test_jackknife_se_matches_the_spread_of_fd_over_independent_draws():
    rng = np.random.default_rng(0)
    d, n = 3, 120
    real = gaussian_stats(rng.normal(0.0, 1.0, (5000, d)))
    draws = [rng.normal(0.4, 1.2, (n, d)) for _ in range(150)]
    fds = np.array([frechet_distance(*gaussian_stats(f), *real) for f in draws])
    halves = np.array(
        [(lambda c: (c[2] - c[1]) / 2)(fd_jackknife_ci(f, real, groups=16)) for f in draws[:40]]
    )
    t = 2.131  # t_{0.975, 15}
    se_jack = float(np.mean(halves)) / t
    assert 0.7 < se_jack / fds.std(ddof=1) < 1.4  # measured 1.00 (coverage 0.93)
    covered = np.mean(
        [
            lo <= fds.mean() <= hi
            for lo, hi in (fd_jackknife_ci(f, real, groups=16)[1:] for f in draws[40:100])
        ]
    )
    assert covered > 0.8


def test_peak_memory_sees_a_large_cpu_allocation():
    with PeakMemory(torch.device("cpu"), 0.001) as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB
        x.add_(1)
        del x
    assert 40 < mem.peak_mb < 200 and mem.kind == "rss_delta" and not math.isnan(mem.peak_mb)


def test_task_config_is_checked():
    with pytest.raises(ConfigError, match="steps >= 2"):
        DiffusionQuantTaskConfig(steps=1)
    with pytest.raises(ConfigError, match="fd_groups"):
        DiffusionQuantTaskConfig(fd_groups=1)
