"""The CacheQuant grid end to end on the local cluster (tiny sizes), its grid, Pareto front and shard task."""

from __future__ import annotations

import math

import pytest
import torch

from actors.model_shard import ModelShardTask, ShardConfig, parse_point
from methods.errors import ConfigError
from sweeps import cachequant_grid as cg

TINY = [
    "--set",
    'task.model="untrained"',
    "--set",
    "task.steps=4",
    "--set",
    "task.samples=4",
    "--set",
    "task.calib_samples=2",
    "--set",
    "intervals=[2]",
    "--set",
    'schedules=["dps"]',
    "--set",
    'bits=["w8a8"]',
]


def test_grid_end_to_end(ray_local, tmp_path, capsys):
    rc = cg.main(["--out", str(tmp_path), "--run-id", "r", "--no-progress", *TINY])
    out = capsys.readouterr().out
    run_dir = tmp_path / "cachequant_grid" / "r"
    assert rc == 0 and f"run directory: {run_dir}" in out.splitlines()[0]
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("summary: ") and "complete=3" in summary and "failed=0" in summary
    assert (run_dir / "pareto.png").stat().st_size > 1000
    table = (run_dir / "table.md").read_text()
    for point in ("N1|uniform|w8a8|none", "N2|dps|w8a8|none", "N2|dps|w8a8|both"):
        assert point in table
    assert "cachequant_mac_speedup=" in summary


def test_grid_points_and_validation():
    cfg = cg.CacheQuantGridConfig()
    pts = cg.grid(cfg)
    assert len(pts) == len(set(pts)) == 35
    assert pts[:3] == ["N1|uniform|fp|none", "N1|uniform|w8a8|none", "N1|uniform|w4a8|none"]
    assert not any(p.startswith("N3|qdps|fp") for p in pts) and "N5|dps|fp|cache" in pts
    with pytest.raises(ConfigError, match="intervals"):
        cg.CacheQuantGridConfig(intervals=(1,))
    with pytest.raises(ConfigError, match="schedules"):
        cg.CacheQuantGridConfig(schedules=("dsp",))
    assert parse_point("N5|qdps|w4a8|both") == {
        "interval": 5,
        "schedule": "qdps",
        "bits": "w4a8",
        "cache_dec": True,
        "quant_dec": True,
    }
    with pytest.raises(ConfigError):
        parse_point("5|dps|w8a8|both")


def test_pareto_front():
    rows = [{"s": 1.0, "q": 1.0}, {"s": 2.0, "q": 2.0}, {"s": 1.5, "q": 3.0}, {"s": 2.0, "q": 1.5}]
    assert cg.pareto(rows, "s", "q") == [rows[0], rows[3]]


def test_shard_task_on_a_diffusers_folder(tmp_path):
    from diffusers import DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    unet.save_pretrained(tmp_path / "unet")
    DDIMScheduler(num_train_timesteps=1000).save_pretrained(tmp_path / "scheduler")
    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "DDIMPipeline", "unet": ["diffusers", "UNet2DModel"],'
        ' "scheduler": ["diffusers", "DDIMScheduler"]}'
    )
    task = ModelShardTask(ShardConfig(model=str(tmp_path), steps=4, samples=3, calib_samples=2))
    res = task.evaluate({"point": "N2|uniform|w8a8|both"}, seed=0, trial=0, chunk=0, n_chunks=1)
    m = res["metrics"]
    assert res["objectives"]["mac_speedup"] > 1.0 and math.isnan(
        res["objectives"]["digit_fd"]
    )  # not 16x16 digits
    assert m["bop_speedup"] > res["objectives"]["mac_speedup"] and m["mse"] > 0 and m["n_refresh"] == 2
    assert m["wall_speedup"] > 0 and m["cpu_time_speedup"] > 0 and m["cpu_seconds"] > 0


@pytest.mark.slow
def test_grid_as_a_ray_job_on_a_local_head():
    """`evfarm cluster up`, then `ray job submit --working-dir . -- python sweeps/cachequant_grid.py`."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from cluster import cli, headnode

    repo = Path(__file__).resolve().parent.parent.parent
    port, dport = headnode.free_port(), headnode.free_port()
    up = ["cluster", "up", "--port", str(port), "--dashboard-port", str(dport), "--num-cpus", "2"]
    assert cli.main(up) == 0
    state = headnode.load_state(port)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_API_SERVER_ADDRESS": state.dashboard_url}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--working-dir", str(repo), "--",
           sys.executable, "sweeps/cachequant_grid.py", "--no-progress", *TINY]
    try:
        for _ in range(12):  # the head's job agent can take a while to register after `cluster up`
            proc = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=600)
            if "No available agent" not in proc.stdout + proc.stderr:
                break
            time.sleep(5)
    finally:
        cli.main(["cluster", "down", "--port", str(port)])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "summary: " in out and "complete=3" in out and "pareto plot: " in out
