"""sweeps/bench_sltnet.py: the side-by-side FPS protocol, and one tiny real run's tables and claims."""
from __future__ import annotations

import csv
import json
import math
import time

import pytest
import torch

from sweeps import bench_sltnet as bench

MODELS = {"sltnet", "sltnet-ann", "snn-baseline"}


class _Sleeper(torch.nn.Module):
    def __init__(self, name: str, seconds: float, calls: list[str]) -> None:
        super().__init__()
        self.name, self.seconds, self.calls = name, seconds, calls

    def forward(self, x):
        self.calls.append(self.name)
        time.sleep(self.seconds)
        return x


def test_fps_is_timed_side_by_side_with_the_order_rotated_every_round():
    calls: list[str] = []
    models = {"a": _Sleeper("a", 0.002, calls), "b": _Sleeper("b", 0.006, calls)}
    out, cpu = bench.fps_side_by_side(models, torch.zeros(4, 1), warmup=2, iters=3, repeats=3, device="cpu")
    warm, rounds = ["a"] * 2 + ["b"] * 2, [["a", "b"], ["b", "a"], ["a", "b"]]
    assert calls == warm + [name for order in rounds for name in order for _ in range(3)]
    assert [len(v) for v in out.values()] == [3, 3]
    assert all(fa > fb for fa, fb in zip(out["a"], out["b"], strict=True))  # a sleeps a third of b's time
    assert max(out["a"]) < 1 / 0.002 and max(out["b"]) < 1 / 0.006
    assert min(cpu["a"]) > 5 * max(out["a"])  # sleeping costs no CPU time: process-time FPS is far higher


def test_bench_refuses_a_single_fps_round(tmp_path, capsys):
    assert bench.main(["--set", "fps_repeats=1", "--out", str(tmp_path)]) == 2
    assert "fps_repeats >= 2" in capsys.readouterr().err


def _summary(line: str) -> dict[str, str]:
    assert line.startswith("summary: "), line
    return dict(kv.split("=", 1) for kv in line.removeprefix("summary: ").split())


def _csv(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_tiny_run_writes_tables_whose_claims_carry_cis_and_verdicts(tmp_path, capsys):
    """3 stream seeds x 1 window of 20 ms, 2 FPS rounds of 1 forward: ~10-15 s on a shared CPU."""
    rc = bench.main(["--seeds", "3", "--set", "windows=1", "--set", "window_us=20000", "--set", "fps_iters=1",
                     "--set", "fps_repeats=2", "--set", "fps_warmup=0", "--out", str(tmp_path),
                     "--run-id", "tiny", "--no-progress"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    run_dir = tmp_path / "bench_sltnet" / "tiny"
    summary = _summary(out[-1])
    assert summary["run_dir"] == str(run_dir) and summary["seeds"] == "3"
    for clock in ("CPU, wall clock", "CPU, process time"):
        head = f"speed ({clock}; batch 1, 1 thread(s), 0 warm-up + 2 interleaved rounds of 1)"
        assert any(line.startswith(head) and "SLTNet / SNN baseline = " in line for line in out), clock

    results = {r["model"]: r for r in _csv(run_dir / "results.csv")}
    assert set(results) == MODELS
    for r in results.values():
        for col in ("miou", "energy_uj", "energy_conv_uj"):
            assert "±" in r[col] and "[" in r[col] and r[col].endswith("(n=3)"), (col, r[col])
        assert r["fps_cpu"].endswith("(n=2)") and r["fps_cpu_time"].endswith("(n=2)")
    # the ANN twin is SLTNet with LIF -> ReLU: same parameters and MACs; the baseline has no STBs
    assert results["sltnet"]["params"] == results["sltnet-ann"]["params"] > results["snn-baseline"]["params"]
    assert results["sltnet"]["macs"] == results["sltnet-ann"]["macs"]
    assert results["sltnet-ann"]["firing_rate"] == "n/a (ANN)"
    assert 0 < float(results["sltnet"]["firing_rate"]) < 1

    claims = _csv(run_dir / "claims.csv")
    names = {c["claim"] for c in claims}
    assert names == {"miou_sltnet_vs_snn_baseline", "miou_sltnet_vs_majority",
                     "log_energy_ann_over_sltnet_strict", "log_energy_ann_over_sltnet_convention",
                     "log_fps_sltnet_over_snn_baseline_cpu", "log_fps_sltnet_over_ann_cpu",
                     "log_fps_sltnet_over_snn_baseline_cpu_time", "log_fps_sltnet_over_ann_cpu_time"}
    for c in claims:
        lo, value, hi = float(c["lo"]), float(c["value"]), float(c["hi"])
        assert lo <= value <= hi and c["n"] in ("2", "3")
        assert summary[f"{c['claim']}_verdict"] == c["verdict"]
        if c["verdict"] == "supported":
            assert lo > 0 or hi < 0
        else:
            assert c["verdict"] == "not_distinguishable"
    for label in ("strict", "convention"):  # the ratio printed is the claim's log-ratio, back on its scale
        assert float(summary[f"energy_ratio_{label}"]) == pytest.approx(
            math.exp(float(summary[f"log_energy_ann_over_sltnet_{label}"])), abs=0.006)
    assert float(summary["speedup_cpu"]) == pytest.approx(
        math.exp(float(summary["log_fps_sltnet_over_snn_baseline_cpu"])), abs=0.006)

    paper = _csv(run_dir / "paper_claims.csv")
    assert [p["paper"] for p in paper] == ["+0.073 (over SOTA SNNs, DDD17)", "5.48x", "5.48x", "1.14x (GPU)",
                                           "1.14x (GPU)"]
    allowed = {"yes", "in direction only", "in direction; size not distinguishable", "no: the opposite",
               "not distinguishable"}
    for p in paper:
        assert p["appears"] in allowed
        assert (p["verdict"] == "supported") == (p["appears"] != "not distinguishable")
    assert int(summary["paper_claims_appearing"]) == sum(p["appears"] == "yes" for p in paper)

    raw = json.loads((run_dir / "bench.json").read_text())
    assert raw["seeds"] == [2000, 2001, 2002]
    assert all(len(v["miou"]) == 3 for v in raw["per_seed"].values())
    assert all(len(v["fps_cpu"]) == len(v["fps_cpu_time"]) == 2 for v in raw["static"].values())
    record = json.loads((run_dir / "run.json").read_text())
    assert record["kind"] == "benchmark" and record["config"]["windows"] == 1
