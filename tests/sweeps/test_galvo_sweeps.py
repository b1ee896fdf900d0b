"""galvo_farm end to end: a farm of 2 virtual rigs (the `galvo_rig` resource) runs each rig's sweep.

The shared test cluster has no `galvo_rig` resource, so this module starts its own 2-CPU local
cluster with 2 rigs (as tests/cluster/test_multinode.py does) and shuts it down at the end; the
next `ray_local` user starts the shared one again.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from cluster.results import read_table
from methods.errors import ConfigError
from sweeps import galvo_farm as gf

TINY_SEARCH = ["--rig", "search", "--sampler", "grid", "--rigs", "2",
               "--set", 'search.methods=["uniform", "ppm"]', "--set", "search.budgets=[30]",
               "--set", "search.scenes=2", "--set", "search.curve_points=5"]
TINY_SCANNER = ["--rig", "scanner", "--max-trials", "2", "--set", 'scanner.calib_params=["tiers"]',
                "--set", "scanner.static_baseline=false",
                "--set", "scanner.calib={n_camera_points=30, n_laser_points=30, n_joint_points=30, "
                "n_test_points=50}"]


@pytest.fixture(scope="module")
def rig_cluster():
    import ray

    from cluster.connect import connect

    if ray.is_initialized():
        ray.shutdown()  # the shared cluster has no rigs; the next ray_local user restarts it
    connect(num_cpus=2, local=True, log_to_driver=False, resources={"galvo_rig": 2})
    yield
    ray.shutdown()


def _run(tmp_path, run_id, *args):
    rc = gf.main(["--out", str(tmp_path), "--run-id", run_id, "--no-progress", *args])
    return rc, read_table(tmp_path / gf.SWEEP / run_id).to_pylist()


def _trials(rows):
    return {r["method"] if "method" in r else r["trial_number"]: r
            for r in rows if r["row_kind"] == "trial" and r["state"] == "COMPLETE"}


def test_search_grid_through_the_farm_lands_rows_on_rigs_and_repeats_by_seed(rig_cluster, tmp_path, capsys):
    rc, rows = _run(tmp_path, "a", *TINY_SEARCH)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0
    assert last.startswith("summary: ") and "rig=search" in last and "actors_on_rigs=" in last
    assert "recall_uniform=" in last and "ppm_over_uniform=" in last
    trials = _trials(rows)
    assert set(trials) == {"uniform", "ppm"}
    for t in trials.values():
        assert t["galvo_rig"] == 1.0 and t["budget"] == 30 and t["n_shots"] == 30  # ran on a rig actor
        curve = sorted((r for r in rows
                        if r["row_kind"] == "curve" and r["trial_number"] == t["trial_number"]),
                       key=lambda r: r["curve_shot"])
        assert [r["curve_shot"] for r in curve] == [6, 12, 18, 24, 30]
        assert curve[-1]["curve_recall"] == pytest.approx(t["recall"])
        assert curve[-1]["curve_time_s"] == pytest.approx(t["total_time_s"])
    assert len({t["actor_id"] for t in trials.values()}) <= 2
    run_dir = tmp_path / gf.SWEEP / "a"
    assert (run_dir / "recall_vs_time.png").stat().st_size > 0
    assert (run_dir / "pareto_front.png").stat().st_size > 0

    rc2, rows2 = _run(tmp_path, "b", *TINY_SEARCH)  # the grid repeats exactly for the same seed
    assert rc2 == 0
    again = _trials(rows2)
    for m in trials:
        for key in ("recall", "total_time_s", "loc_err_v", "calib_rmse_v"):
            a, b = trials[m][key], again[m][key]
            assert (math.isnan(a) and math.isnan(b)) or a == b, (m, key)


def test_scanner_optuna_through_the_farm(rig_cluster, tmp_path, capsys):
    rc, rows = _run(tmp_path, "s", *TINY_SCANNER)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0 and "rig=scanner" in last and "best_rmse_mm=" in last and "pareto=" in last
    trials = [r for r in rows if r["row_kind"] == "trial"]
    assert len(trials) == 2 and all(t["state"] == "COMPLETE" for t in trials)
    for t in trials:
        assert t["galvo_rig"] == 1.0
        assert 150.0 <= t["rig_laser_baseline_mm"] <= 500.0 and t["tiers"] in ("all", "staged", "joint")
        assert 0 < t["rmse_mm"] < t["rmse_design_mm"] and t["calib_wall_s"] > 0
    assert (tmp_path / gf.SWEEP / "s" / "rmse_mm_vs_params.png").stat().st_size > 0


def test_farm_refuses_a_cluster_without_enough_rigs(rig_cluster, tmp_path, capsys):
    rc = gf.main(["--out", str(tmp_path), "--no-progress", "--rigs", "3", *TINY_SEARCH[:4]])
    assert rc == 2 and "galvo_rig" in capsys.readouterr().err
    assert not (tmp_path / gf.SWEEP).exists()  # refused before a run directory was made
    with pytest.raises(ConfigError, match="needs 2 `galvo_rig`.*has 1"):
        gf.check_rig_resources({"CPU": 2.0, "galvo_rig": 1.0}, 2)


def test_a_driver_attached_by_address_refuses_a_cluster_without_enough_rigs(rig_cluster, tmp_path):
    """Under `ray job submit` the driver attaches to a cluster; too few rigs must not hang the farm."""
    import os
    import subprocess
    import sys

    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.run([sys.executable, "-m", "sweeps.galvo_farm", "--out", str(tmp_path), "--no-progress",
                           "--rigs", "3"], env=env, capture_output=True, text=True, timeout=180,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "needs 3 `galvo_rig`" in proc.stderr and "has 2" in proc.stderr


def test_embedded_resources_follow_every_way_of_setting_the_actors(tmp_path, monkeypatch):
    """The resolved config (not a second parse of argv) decides how many rigs the cluster gets."""
    from cluster.config import load_config

    def rigs(*overrides, config=None):
        return gf.embedded_resources(load_config(gf.GalvoFarmConfig, config, list(overrides)))["galvo_rig"]

    assert rigs() == gf.GalvoFarmConfig().study.actors == 2
    assert rigs("study.actors=4") == 4
    toml = tmp_path / "farm.toml"
    toml.write_text("[study]\nactors = 6\n")
    assert rigs(config=toml) == 6
    monkeypatch.setattr(gf.os, "cpu_count", lambda: 2)
    cfg = load_config(gf.GalvoFarmConfig, None, ["study.actors=5"])
    assert gf.embedded_resources(cfg) == {"galvo_rig": 5.0, "CPU": 5}  # more rigs than cores: time-share
    assert "CPU" not in gf.embedded_resources(load_config(gf.GalvoFarmConfig, None, []))


def test_rigs_flag_sets_the_actors_through_the_shared_cli(tmp_path, capsys):
    assert gf.main(["--dry-run", "--rigs", "5", "--out", str(tmp_path)]) == 0
    assert '"actors": 5' in capsys.readouterr().out


def test_bad_config_is_refused_with_the_valid_names():
    with pytest.raises(ConfigError, match="bogus.*settle_s"):
        gf.SearchFarmConfig(rig_params=("bogus",))
    with pytest.raises(ConfigError, match="objectives"):
        gf.ScannerFarmConfig(objectives=("recall",))
    with pytest.raises(ConfigError, match="budget_range"):
        gf.SearchFarmConfig(budget_range=(50, 10))
    with pytest.raises(ConfigError, match="setle_s"):
        gf.SearchFarmConfig(rig={"setle_s": 1e-3})
