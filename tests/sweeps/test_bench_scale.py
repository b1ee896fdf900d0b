"""sweeps/bench_scale.py (issue 20): its shorthand, its refusals, its statistics, one tiny real run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from sweeps import bench_scale


def _summary(out: str) -> dict[str, str]:
    line = out.strip().splitlines()[-1]
    assert line.startswith("summary: "), line
    return dict(kv.split("=", 1) for kv in line.removeprefix("summary: ").split())


def test_quick_is_a_shorthand_for_its_settings(tmp_path, capsys):
    assert bench_scale.main(["--quick", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    config = json.loads(out[: out.rindex("}") + 1])
    assert config["actors"] == [1, 4, 16] and config["study_trials"] == bench_scale.QUICK["study_trials"]
    assert _summary(out) == {"dry_run": "1"}
    assert bench_scale.main(["--dry-run"]) == 0
    full = json.loads(capsys.readouterr().out.rsplit("}", 1)[0] + "}")
    assert full["actors"] == [1, 4, 16, 64, 256] and full["study_trials"] == 10_000


@pytest.mark.parametrize(
    "setting", ["actors=[0]", 'samplers=["cmaes"]', "study_trials=100", "cluster_nodes=1", "roll_seconds=0"]
)
def test_bad_settings_are_refused_with_exit_2(setting, tmp_path, capsys):
    assert bench_scale.main(["--set", setting, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()
    assert not any(tmp_path.iterdir())


def test_the_growth_ratio_interval_covers_the_true_ratio():
    rng = np.random.default_rng(0)
    a = rng.exponential(1.0, 100)
    b = rng.exponential(3.0, 100)
    est = bench_scale._ratio_ci(a, b)
    assert est.lo < 3.0 < est.hi and est.value == pytest.approx(b.mean() / a.mean())
    flat = bench_scale._ratio_ci(a, a[::-1].copy())
    assert flat.lo < 1.0 < flat.hi


def test_the_in_process_study_loop_records_every_trial(tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    r = bench_scale._study_loop("grid", 300, tmp_path, buffered=True)
    assert r["ask"].shape == (300,) and (r["ask"] > 0).all() and (r["append"] > 0).all()
    study = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(r["path"]))))
    xs = sorted(t.params["y"] * 50 + t.params["x"] for t in study.trials)
    assert xs == list(range(300)) and all(t.state.name == "COMPLETE" for t in study.trials)


@pytest.mark.slow
def test_a_tiny_run_writes_its_tables_plot_and_targets(tmp_path, capsys):
    settings = {
        "actors": [1, 2],
        "samplers": ["random", "grid"],
        "trials_per_point": 20,
        "tpe_trials_per_point": 10,
        "overlap_actors": [2],
        "cluster_nodes": 0,
        "study_trials": 300,
        "tpe_trials": 300,
        "plain_trials": 300,
        "sink_rows": 1000,
        "trickle_rows": 20,
        "tune": False,
        "tune_trials": 10,
        "tune_many": 2,
        "overhead_trials": 10,
        "load_trials": 2,
        "rss_trials": 1000,
        "samplers_tpe": None,
    }
    settings.pop("samplers_tpe")
    args = [a for k, v in settings.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    assert bench_scale.main(args + ["--out", str(tmp_path), "--run-id", "tiny", "--no-progress"]) == 0
    out = capsys.readouterr().out
    summary = _summary(out)
    run_dir = tmp_path / "bench_scale" / "tiny"
    for name in (
        "scale_throughput.csv",
        "scale_growth.csv",
        "scale_sink.csv",
        "scale_tune.csv",
        "targets.csv",
        "scale.png",
        "run.json",
    ):
        assert (run_dir / name).exists(), name
    assert "target sink_rows_per_s_20_cols" in out and ("-> met" in out or "-> not met" in out)
    # overlap_land rows beside the plain ones at the same count; the overhead at both settings
    thr = list(csv.DictReader((run_dir / "scale_throughput.csv").open()))
    assert {(r["actors"], r["sampler"], r["overlap_land"]) for r in thr} >= {
        ("2", "grid", "True"), ("2", "grid", "False"), ("2", "random", "True")
    }
    shares = [float(r["driver_cpu_share"]) for r in thr]  # the driver's CPU / wall time in the window
    assert all(0.0 < s <= 1.5 for s in shares if np.isfinite(s)) and any(np.isfinite(s) for s in shares)
    assert np.isfinite(float(summary["overhead_ms_fast"])) and "overhead_ms_1ms_objective_fast" in out
    assert (
        int(summary["targets_met"]) + int(summary["targets_not_met"]) + int(summary["targets_not_measured"])
        >= 8
    )
