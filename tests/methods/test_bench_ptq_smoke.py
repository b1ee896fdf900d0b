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


def _rows(undecided_brecq, undecided_qdrop):
    base = {"model": "m", "bits": "w2a4"}
    return {"rows": [
        {**base, "method": "minmax", "top1": [0.50, 0.40, 0.45], "undecided_mean": None},
        {**base, "method": "brecq", "top1": [0.66, 0.65, 0.66], "undecided_mean": undecided_brecq},
        {**base, "method": "qdrop", "top1": [0.76, 0.76, 0.77], "undecided_mean": undecided_qdrop},
    ]}


def test_a_claim_between_reconstructions_is_unconverged_until_both_harden(tmp_path):
    from cluster.bench_cli import BenchRun
    from sweeps.bench_ptq import claims

    def verdicts(res):
        run = BenchRun("bench_ptq", None, tmp_path)
        out = claims(run, res, lambda m, b, w: f"{m}.{b}.{w}")
        return {k: v for k, v in out.items() if k.endswith("_verdict")}

    open_ = verdicts(_rows(0.02, 0.30))
    assert open_["m.w2a4.qdrop_vs_brecq_verdict"] == "unconverged"
    assert open_["m.w2a4.qdrop_vs_minmax_verdict"] == "supported"  # against min-max: no budget to converge
    done = verdicts(_rows(0.02, 0.01))
    assert done["m.w2a4.qdrop_vs_brecq_verdict"] == "supported"
