"""The CacheQuant grid end to end on the local cluster (tiny sizes), its grid, Pareto front and shard task."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from actors.model_shard import ModelShardTask, ShardConfig, ShardPoint
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
    for point in ("| 1 | uniform | w8a8 | none |", "| 2 | dps | w8a8 | none |", "| 2 | dps | w8a8 | both |"):
        assert point in table
    assert "cachequant_mac_speedup=" in summary and "quality_objective=digit_fd" in summary


def test_grid_point_is_typed_columns_in_parquet(ray_local, tmp_path):
    """The grid point travels as typed columns, so DuckDB filters it directly (no point strings)."""
    import duckdb

    assert cg.main(["--out", str(tmp_path), "--run-id", "r", "--no-progress", *TINY]) == 0
    parts = str(tmp_path / "cachequant_grid" / "r" / "part-*.parquet")
    rows = duckdb.sql(
        f"SELECT interval, schedule, corrections, cache_dec, quant_dec FROM read_parquet('{parts}', "
        "union_by_name=true) WHERE row_kind = 'trial' AND state = 'COMPLETE' AND bits = 'w8a8' "
        "ORDER BY interval, corrections"
    ).fetchall()
    assert rows == [
        (1, "uniform", "none", False, False),
        (2, "dps", "both", True, True),
        (2, "dps", "none", False, False),
    ]
    columns = {
        c[0]
        for c in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{parts}', union_by_name=true)").fetchall()
    }
    assert "point" not in columns


def test_grid_points_and_validation():
    cfg = cg.CacheQuantGridConfig()
    pts = cg.grid(cfg)
    keys = [tuple(p.values()) for p in pts]
    assert len(pts) == len(set(keys)) == 35
    assert keys[:3] == [
        (1, "uniform", "fp", "none"),
        (1, "uniform", "w8a8", "none"),
        (1, "uniform", "w4a8", "none"),
    ]
    assert (3, "qdps", "fp", "none") not in keys and (5, "dps", "fp", "cache") in keys
    assert all(isinstance(p["interval"], int) and set(p) == set(cg.POINT_FIELDS) for p in pts)
    space = cg.search_space(pts)
    assert space["bits"] == ("categorical", ["fp", "w8a8", "w4a8"]) and space["interval"][1] == [1, 3, 5]
    with pytest.raises(ConfigError, match="intervals"):
        cg.CacheQuantGridConfig(intervals=(1,))
    with pytest.raises(ConfigError, match="schedules"):
        cg.CacheQuantGridConfig(schedules=("dsp",))
    with pytest.raises(ConfigError, match="corrections"):
        cg.CacheQuantGridConfig(corrections=("bath",))
    cq = ShardPoint.from_dict({"interval": 5, "schedule": "qdps", "bits": "w4a8", "corrections": "both"})
    m = cq.method_config(calib_samples=2)
    assert (m.interval, m.schedule, m.bits, m.cache_dec, m.quant_dec) == (5, "qdps", "w4a8", True, True)
    with pytest.raises(ConfigError, match="Unknown ShardPoint key 'point'"):
        ShardPoint.from_dict({"point": "N5|dps|w8a8|both"})
    with pytest.raises(ConfigError, match="qdps"):
        ShardPoint(5, "qdps", "fp", "none").method_config(calib_samples=2)


def test_task_preset_official_gives_every_point_the_official_switches_and_sizes():
    """`--set task.preset=official`: the point's own fields survive, the preset's sizes replace the
    task's calib_samples, and an unknown preset is refused with the choices."""
    from actors.model_shard import ShardConfig

    m = ShardPoint(5, "dps", "w8a8", "both").method_config(calib_samples=2, preset="official")
    assert (m.interval, m.schedule, m.bits, m.cache_dec, m.quant_dec) == (5, "dps", "w8a8", True, True)
    assert (m.spacing, m.dec_fit, m.quant_dec_on, m.attn_quant, m.dec_samples) == (
        "quad", "refresh", "shortcut_half", True, 512)
    ours = ShardPoint(5, "dps", "w8a8", "both").method_config(calib_samples=2)
    assert (ours.spacing, ours.dec_fit, ours.calib_samples, ours.dps_samples) == ("uniform", "cached", 2, 2)
    with pytest.raises(ConfigError, match="official"):
        ShardConfig(preset="oficial")


def test_pareto_front():
    rows = [{"s": 1.0, "q": 1.0}, {"s": 2.0, "q": 2.0}, {"s": 1.5, "q": 3.0}, {"s": 2.0, "q": 1.5}]
    assert cg.pareto(rows, "s", "q") == [rows[0], rows[3]]


def _tiny_pipeline_folder(path):
    """A user's diffusers pipeline folder (DDPMPipeline layout), not the zoo's 16x16 digits model."""
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
    unet.save_pretrained(path / "unet")
    DDIMScheduler(num_train_timesteps=1000).save_pretrained(path / "scheduler")
    (path / "model_index.json").write_text(
        '{"_class_name": "DDIMPipeline", "unet": ["diffusers", "UNet2DModel"],'
        ' "scheduler": ["diffusers", "DDIMScheduler"]}'
    )
    return path


def test_shard_task_on_a_diffusers_folder(tmp_path):
    cfg = ShardConfig(model=str(_tiny_pipeline_folder(tmp_path)), steps=4, samples=3, calib_samples=2)
    assert cfg.quality_objective() == "mse"
    task = ModelShardTask(cfg)
    point = {"interval": 2, "schedule": "uniform", "bits": "w8a8", "corrections": "both"}
    res = task.evaluate(point, seed=0, trial=0, chunk=0, n_chunks=1)
    m, obj = res["metrics"], res["objectives"]
    assert obj["mac_speedup"] > 1.0 and obj["mse"] > 0 and math.isfinite(obj["mse"])
    assert "digit_fd" not in obj  # no feature network for these samples: absent, never NaN
    assert m["bop_speedup"] > obj["mac_speedup"] and m["n_refresh"] == 2
    assert m["wall_speedup"] > 0 and m["cpu_time_speedup"] > 0 and m["cpu_seconds"] > 0
    with pytest.raises(ConfigError, match="quality='mse'"):
        ModelShardTask(ShardConfig(model=cfg.model, steps=4, samples=3, calib_samples=2, quality="digit_fd"))


def test_grid_on_a_user_pipeline_folder_completes_with_the_mse_objective(ray_local, tmp_path, capsys):
    """The documented real-model mode of the main job: every trial COMPLETE (it was NaN -> FAIL)."""
    folder = _tiny_pipeline_folder(tmp_path / "pipe")
    argv = [
        "--out",
        str(tmp_path),
        "--run-id",
        "r",
        "--no-progress",
        "--model",
        str(folder),
        *TINY[2:],
    ]  # TINY minus task.model
    assert cg.main(argv) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert "complete=3" in summary and "failed=0" in summary and "quality_objective=mse" in summary
    from cluster.results import read_table

    rows = [r for r in read_table(tmp_path / "cachequant_grid" / "r").to_pylist() if r["row_kind"] == "trial"]
    assert len(rows) == 3 and all(r["state"] == "COMPLETE" and math.isfinite(r["mse"]) for r in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_shard_task_on_cuda_matches_the_cpu_metrics_shape():
    task = ModelShardTask(ShardConfig(model="untrained", device="cuda", steps=4, samples=4, calib_samples=2))
    point = {"interval": 2, "schedule": "dps", "bits": "w8a8", "corrections": "both"}
    res = task.evaluate(point, seed=0, trial=0, chunk=0, n_chunks=1)
    assert task.noise.device.type == "cuda" and res["objectives"]["mac_speedup"] > 1.0
    assert math.isfinite(res["objectives"]["digit_fd"]) and math.isfinite(res["objectives"]["mse"])


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
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "job",
        "submit",
        "--working-dir",
        str(repo),
        "--",
        sys.executable,
        "sweeps/cachequant_grid.py",
        "--no-progress",
        *TINY,
    ]
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


def test_save_samples_writes_an_arena_folder_of_every_grid_point(ray_local, tmp_path, capsys):
    """`--save-samples N`: N images per completed point, the same seeds for each, that the arena
    server reads as its models folder (issue: `evfarm arena serve` runs on a CacheQuant run's samples)."""
    from cluster.arena_app import scan_models

    rc = cg.main(["--out", str(tmp_path), "--run-id", "r", "--no-progress", "--save-samples", "2", *TINY])
    assert rc == 0
    folder = tmp_path / "cachequant_grid" / "r" / "samples"
    models = scan_models(folder)
    assert sorted(models) == ["n1-uniform-w8a8-none", "n2-dps-w8a8-both", "n2-dps-w8a8-none"]
    assert all(sorted(m) == ["seed0000", "seed0001"] for m in models.values())
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"samples={folder}" in summary


def test_point_names_are_stable_and_distinct():
    from actors.arena_samples import point_name

    assert point_name(ShardPoint(5, "dps", "w8a8", "both")) == "n5-dps-w8a8-both"
    assert point_name({"interval": 1, "schedule": "uniform", "bits": "fp", "corrections": "none"}) == \
        "n1-uniform-fp-none"
    names = {point_name(ShardPoint(**p)) for p in cg.grid(cg.CacheQuantGridConfig())}
    assert len(names) == len(cg.grid(cg.CacheQuantGridConfig()))


def test_save_samples_must_be_a_count():
    with pytest.raises(ConfigError, match="save_samples"):
        cg.CacheQuantGridConfig(save_samples=-1)


def test_quantizers_compose_dilatequant_into_the_grid_and_the_default_is_unchanged():
    default = cg.grid(cg.CacheQuantGridConfig())
    assert all("quantizer" not in p for p in default)
    assert cg.point_fields(default) == cg.POINT_FIELDS
    mixed = cg.grid(cg.CacheQuantGridConfig(quantizers=("qdiffusion", "dilatequant")))
    assert all("quantizer" in p for p in mixed)  # a grid trial never leaves a space field to the sampler
    fp = [p for p in mixed if p["bits"] == "fp"]
    assert fp and all(p["quantizer"] == "qdiffusion" for p in fp)  # FP has no quantizer: once
    quant = [p for p in mixed if p["bits"] != "fp"]
    assert len(quant) == 2 * len([p for p in default if p["bits"] != "fp"])
    assert set(cg.search_space(mixed)["quantizer"][1]) == {"qdiffusion", "dilatequant"}
    with pytest.raises(ConfigError, match="quantizers"):
        cg.CacheQuantGridConfig(quantizers=("brecq",))


def test_cache_points_repeat_cached_points_and_the_default_is_unchanged():
    default = cg.grid(cg.CacheQuantGridConfig())
    assert all("cache_point" not in p for p in default)
    two = cg.grid(cg.CacheQuantGridConfig(cache_points=("", "up.1.res.1")))
    assert all("cache_point" in p for p in two)  # a grid trial never leaves a space field to the sampler
    cached = [p for p in default if p["interval"] > 1]
    assert len([p for p in two if p["interval"] > 1]) == 2 * len(cached)
    assert cg.point_fields(two) == (*cg.POINT_FIELDS, "cache_point")
    row = next(p for p in two if p["cache_point"] == "up.1.res.1")
    assert ShardPoint.from_dict(row).method_config(calib_samples=1).cache_point == "up.1.res.1"
    assert "cache_point" not in ShardPoint().to_dict()
    with pytest.raises(ConfigError, match="cache_points"):
        cg.CacheQuantGridConfig(cache_points=("up.one",))


def test_shard_task_caches_at_a_resblock_and_speeds_up_less_than_at_branch_zero():
    """On the digits U-Net, caching at the *second* ResBlock of the last up-block recomputes
    less than the whole block: the MAC speed-up rises over branch 0 [inferred from cache_point_macs]."""
    task = ModelShardTask(ShardConfig(model="untrained", steps=4, samples=4, calib_samples=2, quality="mse"))
    kw = dict(seed=0, trial=0, chunk=0, n_chunks=1)
    point = {"interval": 2, "schedule": "uniform", "bits": "fp", "corrections": "none"}
    at_branch = task.evaluate(point, **kw)
    at_res = task.evaluate({**point, "cache_point": "up.2.res.1"}, **kw)
    assert at_res["objectives"]["mac_speedup"] > at_branch["objectives"]["mac_speedup"] > 1.0
    assert at_res["objectives"]["mse"] != at_branch["objectives"]["mse"]


def test_calibration_seed_draws_new_calibration_noise_on_the_same_evaluation_noise():
    cfg = ShardConfig(model="untrained", steps=3, samples=4, calib_samples=2)
    task = ModelShardTask(cfg)
    other = task.with_calibration(2)
    assert other.cfg.calib_seed == 2 and task.cfg.calib_seed == 0
    assert torch.equal(other.noise, task.noise) and other.fp_samples is task.fp_samples
    assert not torch.equal(other.calib_noise, task.calib_noise) and other.memo is not task.memo
    # the copy draws what a task built with that seed draws; and back to seed 0 draws the default again
    assert torch.equal(ModelShardTask(replace(cfg, calib_seed=2)).calib_noise, other.calib_noise)
    assert torch.equal(other.with_calibration(0).calib_noise, task.calib_noise)
    point = ShardPoint(2, "dps", "w8a8", "both").to_dict()
    r0 = task.evaluate(point, seed=0, trial=0, chunk=0, n_chunks=1)["objectives"]["mse"]
    r2 = other.evaluate(point, seed=0, trial=0, chunk=0, n_chunks=1)["objectives"]["mse"]
    assert r0 != r2  # the calibration reached the quantizers
    with pytest.raises(ConfigError, match="calib_seed"):
        ShardConfig(calib_seed=-1)
