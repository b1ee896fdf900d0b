"""Smoke test of sweeps/bench_ptq.py: one model, two methods, one seed; checks the summary contract."""

from __future__ import annotations

import json

import pytest

from sweeps.bench_ptq import main


@pytest.mark.parametrize(("bits", "problem"), [("W4A4,fp", "needs quantized bits"), ("4-4", "'w4a4'")])
def test_bad_bits_exit_2_before_any_work(bits, problem, capsys):
    with pytest.raises(SystemExit) as err:
        main(["--bits", bits])
    msg = capsys.readouterr().err
    assert err.value.code == 2 and "bits: expected" in msg and problem in msg


@pytest.mark.slow  # dominated by imports (torch, timm, the run record): 30 s measured on a loaded machine
def test_bench_prints_table_and_summary_last(tmp_path, capsys):
    rc = main(
        [
            "--models",
            "cnn-bn-digits",
            "--bits",
            "W4A4",
            "--methods",
            "minmax,qdrop",
            "--seeds",
            "1",
            "--iters",
            "2",
            "--set",
            "calib=32",
            "--out",
            str(tmp_path),
            "--set",
            "plot=false",
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("run directory: ")
    assert lines[-1].startswith("summary: ") and "cnn.w4a4.qdrop=" in lines[-1] and "cnn.fp=" in lines[-1]
    bench = json.loads(next(tmp_path.rglob("bench.json")).read_text())
    assert {r["method"] for r in bench["rows"]} == {"minmax", "qdrop"}
    assert all(0.0 <= r["top1_mean"] <= 1.0 for r in bench["rows"])
