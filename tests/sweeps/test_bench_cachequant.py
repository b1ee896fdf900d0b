"""bench_cachequant at tiny sizes: FD with CIs, the measured noise floor, paired claims, cache points."""

from __future__ import annotations

import csv

import pytest

from sweeps import bench_cachequant as bc

TINY = ["--set", "model=untrained", "--steps", "3", "--samples", "16", "--set", "calib=2",
        "--set", "intervals=[1,2]", "--interval", "2", "--set", 'bits=["w8a8"]', "--set", "qdiffusion=false",
        "--set", 'cache_points=["up.2.res.1"]', "--set", "fd_groups=4", "--set", "int8_kernel_factor=2.0",
        "--set", "ablate=true"]


def _summary(line: str) -> dict[str, str]:
    assert line.startswith("summary: "), line
    return dict(kv.split("=", 1) for kv in line.removeprefix("summary: ").split())


def test_bench_prints_fd_with_ci_floor_and_paired_claims(tmp_path, capsys):
    assert bc.main(["--out", str(tmp_path), "--run-id", "t", "--no-progress", *TINY]) == 0
    out = capsys.readouterr().out
    s = _summary(out.strip().splitlines()[-1])
    assert float(s["fp_fd_lo"]) < float(s["fp_fd"]) < float(s["fp_fd_hi"])
    assert float(s["noise_floor"]) > 0 and s["floor_size"] == "16"
    verdicts = {k: v for k, v in s.items() if k.endswith("_verdict")}
    assert set(verdicts) == {"dps_beats_uniform_fp_verdict", "naive_worse_than_cache_only_w8a8_verdict",
                             "naive_worse_than_quant_only_w8a8_verdict", "dec_recovers_w8a8_verdict",
                             "cachequant_beats_naive_w8a8_verdict", "official_beats_ours_w8a8_verdict",
                             "ours_costs_over_fp_w8a8_verdict", "official_costs_over_its_fp_w8a8_verdict"}
    assert set(verdicts.values()) <= {"supported", "not_distinguishable", "opposite"}
    q = float(s["int8_mac_share"])
    assert 0.0 < q < 0.5  # the digits U-Net's Linear/1x1 share: most MACs are 3x3 convs
    run = tmp_path / "bench_cachequant" / "t"
    with open(run / "claims.csv") as fh:
        claims = list(csv.DictReader(fh))
    for c in claims:  # every claim involves a calibrated arm: the mean over the 3 calibration draws
        draws = [float(d) for d in c["per_draw"].split()]
        assert c["calib_draws"] == "3" and len(draws) == 3
        assert float(c["fd_a_minus_b"]) == pytest.approx(sum(draws) / 3, rel=1e-2, abs=1e-2)
        assert float(c["lo"]) <= float(c["fd_a_minus_b"]) <= float(c["hi"])
        assert float(s[f"{c['claim']}_lo"]) <= float(s[c["claim"]]) <= float(s[f"{c['claim']}_hi"])
    by_claim = {c["claim"]: c for c in claims}  # a DPS schedule may repeat across draws; quantization not
    assert len(set(by_claim["dec_recovers_w8a8"]["per_draw"].split())) == 3
    with open(run / "cache_points.csv") as fh:
        points = {r["cache_point"]: float(r["fraction"]) for r in csv.DictReader(fh)}
    assert points["up.2.res.1"] < points["up.2.res.0"] < 1.0  # deeper in the last block: cheaper cached step
    with open(run / "quality.csv") as fh:
        rows = {r["config"]: r for r in csv.DictReader(fh)}
    at = rows["cache-only uniform N=2 @up.2.res.1"]
    assert float(at["mac_x"]) > float(rows["cache-only uniform N=2"]["mac_x"])
    assert "CacheQuant DPS+DEC N=2 w8a8 @up.2.res.1" in rows
    # preset 'official' rows: its own FP (quad spacing) and CacheQuant, on the same evaluation noise
    off, ours = rows["CacheQuant official N=2 w8a8"], rows["CacheQuant DPS+DEC N=2 w8a8"]
    assert rows["FP official (quad spacing)"]["fd"] != rows["FP"]["fd"]  # another sampler: quad spacing
    with open(run / "ablation.csv") as fh:
        ablation = {r["switch"]: r for r in csv.DictReader(fh)}
    assert set(ablation) == set(bc.ABLATIONS)
    for r in ablation.values():  # each switch alone, paired against ours on the same noise
        assert float(r["lo"]) <= float(r["fd_minus_ours"]) <= float(r["hi"])
        assert r["verdict"] in {"supported", "not distinguishable"}
    assert float(ablation["attn_quant"]["fd_minus_ours"]) != 0.0  # the switch reached the sampler
    assert off["refresh"] and off["fd"] != ours["fd"]
    # Amdahl with the measured k = 2 on that share only, for quantized rows; FP rows are not combined
    best_quant_mac = max(float(r["mac_x"]) for c, r in rows.items() if "w8a8" in c)
    predicted = float(s["predicted_int8_wall_speedup_best"])
    assert predicted == pytest.approx(best_quant_mac / (1 - q / 2), rel=2e-3)
