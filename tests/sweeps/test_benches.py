"""Every sweeps/*.py entry point takes the common flags (DESIGN house rule 8, issue 12 items 5/6).

`--dry-run` on each sweep and bench returns 0 and prints `summary: dry_run=1` last without Ray;
one cheap bench really runs (2 seeds) and leaves run.json, a table, a plot and a claims table with
CIs and verdicts in its run directory; `--resume` on a bench and an unknown `--set` key exit 2.
"""

from __future__ import annotations

import importlib
import json

import pytest
from entry_points import BENCHES, ENTRY_POINTS, SWEEPS


def _summary(line: str) -> dict[str, str]:
    assert line.startswith("summary: "), line
    return dict(kv.split("=", 1) for kv in line.removeprefix("summary: ").split())


def test_every_bench_is_an_entry_point():
    benches = sorted(p.stem for p in SWEEPS.glob("bench_*.py"))
    assert benches == BENCHES and len(ENTRY_POINTS) > len(BENCHES) > 0


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_dry_run_prints_the_summary_last_without_ray(name, tmp_path, capsys, monkeypatch):
    import ray

    def no_ray(*args, **kwargs):  # an earlier test may share a running cluster: refuse new starts
        raise AssertionError(f"{name} --dry-run started Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    module = importlib.import_module(f"sweeps.{name}")
    rc = module.main(["--dry-run", "--out", str(tmp_path)])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert out[-1] == "summary: dry_run=1"
    assert not any(tmp_path.iterdir()), f"{name} --dry-run wrote into the results root"


@pytest.mark.parametrize("name", BENCHES)
def test_bench_refuses_resume(name, tmp_path, capsys):
    module = importlib.import_module(f"sweeps.{name}")
    assert module.main(["--resume", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not resume" in err and "rerun" in err


@pytest.mark.parametrize("name", BENCHES)
def test_bench_refuses_an_unknown_key(name, tmp_path, capsys):
    module = importlib.import_module(f"sweeps.{name}")
    assert module.main(["--set", "nonsense=1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Unknown config key 'nonsense'" in err and "Valid keys" in err
    assert not any(tmp_path.iterdir())


def test_bench_without_a_study_refuses_study_flags(tmp_path, capsys):
    from sweeps import bench_galvo3d

    assert bench_galvo3d.main(["--max-trials", "3", "--out", str(tmp_path)]) == 2
    assert "runs no Optuna study" in capsys.readouterr().err


def test_shorthand_flag_sets_the_config_field(capsys):
    from sweeps import bench_galvo3d

    assert bench_galvo3d.main(["--dry-run", "--seeds", "7", "--set", "sensitivity=false"]) == 0
    cfg = json.loads(capsys.readouterr().out.rsplit("summary:", 1)[0])
    assert cfg == {"seeds": 7, "sensitivity": False, "version": 1}


def test_tiny_galvo3d_run_writes_its_run_directory(tmp_path, capsys):
    """~10 s of calibration: 2 seeds, no sensitivity table."""
    from sweeps import bench_galvo3d

    rc = bench_galvo3d.main(["--seeds", "2", "--set", "sensitivity=false", "--out", str(tmp_path),
                             "--run-id", "tiny", "--no-progress"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    run_dir = tmp_path / "bench_galvo3d" / "tiny"
    assert lines[0].startswith(f"run directory: {run_dir}")
    summary = _summary(lines[-1])
    assert summary["run_dir"] == str(run_dir) and summary["seeds"] == "2"
    for key in ("rmse_mm", "static_ratio", "rmse_600mm_baseline", "wall_s"):  # the keys docs cite
        assert key in summary
    for claim in ("calib_gain_mm", "static_gain_mm", "joint_gain_mm", "floor_gap_mm"):
        lo, value, hi = (float(summary[f"{claim}{s}"]) for s in ("_lo", "", "_hi"))
        assert lo <= value <= hi
        excludes_zero = lo > 0 or hi < 0
        assert summary[f"{claim}_verdict"] == ("supported" if excludes_zero else "not_distinguishable")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["kind"] == "benchmark" and record["config"]["seeds"] == 2
    assert record["summary"]["static_gain_mm_verdict"] == summary["static_gain_mm_verdict"]
    for name in ("seeds.md", "seeds.csv", "claims.md", "claims.csv", "galvo3d.png"):
        assert (run_dir / name).is_file(), name
    claims = (run_dir / "claims.md").read_text()
    assert "| static_gain_mm |" in claims and "verdict" in claims
    assert (run_dir / "galvo3d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
