"""sweeps/bench_ksort.py's decomposition of the headline ratio (issue 18): paired per-seed ratios
with censoring, the verdict rule for bounds, and a tiny end-to-end run writing every table."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from sweeps import bench_ksort as bk


def _runs(votes):
    return [{"votes_to_converge": v} for v in votes]


def _var(horizon):
    return bk.Variant("x", "ksort", 4, horizon)


def test_seed_ratio_is_paired_by_seed_with_a_geometric_mean():
    num, den = _runs([1000, 4000, 900]), _runs([100, 200, 300])
    r = bk.seed_ratio(num, _var(5000), den, _var(5000))
    assert r.per_seed == pytest.approx([10.0, 20.0, 3.0])  # pairs by seed, not sorted medians
    assert r.bound == "" and (r.lo, r.hi) == pytest.approx((3.0, 20.0))
    assert r.geo.value == pytest.approx((10 * 20 * 3) ** (1 / 3))
    logs = np.log([10.0, 20.0, 3.0])
    half = 4.302652729911275 * logs.std(ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert r.geo.lo == pytest.approx(math.exp(logs.mean() - half))
    assert r.geo.hi == pytest.approx(math.exp(logs.mean() + half))
    per_cmp = bk.seed_ratio(num, _var(5000), den, _var(5000), 1.0, 6.0)
    assert per_cmp.geo.value == pytest.approx(r.geo.value / 6)


def test_censored_runs_count_at_their_horizon_and_make_a_bound():
    lower = bk.seed_ratio(_runs([None, 4000]), _var(6000), _runs([100, 200]), _var(900))
    assert lower.bound == ">=" and lower.per_seed == pytest.approx([60.0, 20.0])
    assert lower.num_censored == 1 and lower.den_censored == 0
    upper = bk.seed_ratio(_runs([500, 400]), _var(6000), _runs([None, 200]), _var(900))
    assert upper.bound == "<=" and upper.per_seed[0] == pytest.approx(500 / 900)
    both = bk.seed_ratio(_runs([None, 400]), _var(6000), _runs([None, 200]), _var(900))
    assert both.bound == "none" and both.geo is None
    assert bk.ratio_cells(both)["ratio_geo"].startswith("n/a")


def test_a_bound_supports_only_its_own_side():
    high = bk.seed_ratio(_runs([None, None, 9000]), _var(10000), _runs([100, 120, 90]), _var(900))
    assert bk.ratio_cells(high)["verdict"].startswith("supported (> 1")
    # an upper bound far above 1 says nothing about whether the ratio exceeds 1
    up = bk.seed_ratio(_runs([5000, 5200, 4900]), _var(10000), _runs([None, None, 800]), _var(900))
    assert up.geo.lo > 1 and bk.ratio_cells(up)["verdict"] == "bound only"
    flat = bk.seed_ratio(_runs([100, 300, 200]), _var(900), _runs([200, 150, 210]), _var(900))
    assert bk.ratio_cells(flat)["verdict"] == "not distinguishable"


def test_every_contrast_changes_exactly_one_factor():
    grid = bk.cells(1.0, False)
    for key, factor, num, den in bk.CONTRASTS:
        assert num in grid and den in grid, key
        changed = [i for i in range(4) if num[i] != den[i]]
        assert len(changed) == 1, key
        assert changed[0] == {"update rule": 0, "matchmaking": 1, "K": 2, "vote mode": 3}[
            factor.split(":")[0]], key
    assert grid[("ksort", "random", 2, "rank")].matchmaker == "random"
    assert grid[("elo", "ucb", 2, "rank")].matchmaker == "ucb"


def test_bad_bench_config_exits_2(tmp_path, capsys):
    for bad in ("horizon_scale=0", "kwise_k=[1]", "elo_k_factors=[]"):
        assert bk.main(["--set", bad, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "received" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def _rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_tiny_run_writes_the_decomposition_tables(tmp_path, capsys):
    rc = bk.main(["--seeds", "2", "--quick", "--set", "horizon_scale=0.02", "--set", "window=10",
                  "--set", "noise=[0.0]", "--set", "plot=false", "--set", "kwise_k=[2, 5]",
                  "--set", "elo_k_factors=[4]", "--out", str(tmp_path), "--run-id", "tiny",
                  "--no-progress"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    summary = dict(kv.split("=", 1) for kv in lines[-1].removeprefix("summary: ").split())
    for key in ("ksort_k4_median_votes", "elo_median_votes", "ratio", "elo_converged",  # the old keys
                "elo_criteria_matching_11692", "kwise_simultaneous_negative_from_k",
                "kwise_sequential_negative_from_k", "best_converged", "best_reversed_neighbours"):
        assert key in summary, key
    assert summary["kwise_simultaneous_negative_from_k"] == "5"
    assert summary["kwise_sequential_negative_from_k"] == "none"
    run_dir = tmp_path / "bench_ksort" / "tiny"
    for name in ("ratios", "decomposition", "decomposition_cells", "elo_criteria", "kwise", "best_mode",
                 "convergence"):
        assert (run_dir / f"{name}.csv").is_file() and (run_dir / f"{name}.md").is_file(), name
    kw = {(r["K"], r["reading"].split()[0]): r for r in _rows(run_dir / "kwise.csv")}
    assert kw[("5", "simultaneous")]["negative_at_first_vote"] == "True"
    assert kw[("2", "simultaneous")]["negative_at_first_vote"] == "False"
    neg, total = map(int, kw[("5", "simultaneous")]["votes_with_raw_var<=0"].split("/"))
    assert neg >= 2 and total > 0  # at least the first vote of each seed
    assert len(_rows(run_dir / "decomposition.csv")) == len(bk.CONTRASTS)
    ratios = _rows(run_dir / "ratios.csv")
    assert [r["per"] for r in ratios] == ["vote", "pairwise comparison"]
    best = {r["variant"]: r for r in _rows(run_dir / "best_mode.csv")}
    assert best["K=4 best"]["constraints_per_vote"] == "3"
    assert float(best["K=4 best"]["neighbours_never_compared_mean"]) >= 2  # the bottom block


def test_noise_floor_is_the_denominator_spread_and_absent_when_it_is_censored():
    r = bk.seed_ratio(_runs([1000, 4000, 900]), _var(5000), _runs([100, 200, 300]), _var(5000))
    logs = np.log([100.0, 200.0, 300.0])
    pairs = np.abs([logs[0] - logs[1], logs[0] - logs[2], logs[1] - logs[2]])
    assert r.floor.value == pytest.approx(pairs.mean())
    censored = bk.seed_ratio(_runs([5000, 5200, 4900]), _var(10000), _runs([None, 700, 800]), _var(900))
    assert censored.floor is None and bk.ratio_cells(censored)["noise_floor_x"] == "-"
