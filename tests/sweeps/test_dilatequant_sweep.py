"""The DilateQuant sweep end to end on the local cluster (tiny sizes), its grid and its config checks."""

from __future__ import annotations

import pytest

from cluster.results import read_table, summarise_trials
from methods.errors import ConfigError
from sweeps import dilatequant_sweep as ds

TINY = [
    "--set",
    "task.steps=2",
    "--set",
    "task.samples=8",
    "--set",
    "task.trajectories=4",
    "--set",
    "task.batch_size=4",
    "--set",
    "task.fd_groups=4",
    "--set",
    "task.fd_boot=100",
    "--set",
    'methods=["qdiffusion","dilatequant"]',
    "--set",
    'bits=["W4A4"]',
    "--set",
    "dilation=[true]",
    "--set",
    "calib_sizes=[4]",
    "--set",
    "iters=1",
    "--set",
    "tpe_calib=4",
    "--set",
    "study.actors=1",
]


def test_sweep_end_to_end(ray_local, tmp_path, capsys):
    rc = ds.main(["--out", str(tmp_path), "--run-id", "r", "--no-progress", *TINY])
    out = capsys.readouterr().out
    run_dir = tmp_path / "dilatequant_sweep" / "r"
    assert rc == 0 and f"run directory: {run_dir}" in out.splitlines()[0]
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("summary: ") and "complete=2" in summary and "failed=0" in summary
    assert "w4a4.best=" in summary and "w4a4.dilatequant=" in summary and "quality_objective=fd" in summary
    assert (run_dir / "fd_vs_bits.png").stat().st_size > 1000
    table = (run_dir / "table.md").read_text()
    assert "| qdiffusion |" in table and "| dilatequant |" in table
    trials = [r for r in summarise_trials(read_table(run_dir)) if r["state"] == "COMPLETE"]
    by = {r["method"]: r for r in trials}
    assert set(by) == {"qdiffusion", "dilatequant"} and {r["bits"] for r in trials} == {"w4a4"}
    dq, ptq = by["dilatequant"], by["qdiffusion"]
    assert dq["dilation"] is True and ptq["dilation"] is False and dq["wd_unsaturated"] > 0
    assert dq["optimizer_steps"] == dq["units"] and ptq["optimizer_steps"] == 0  # 1 iteration per unit
    for r in trials:  # typed columns with CI, cost, seeds and versions on every row
        assert r["fd_lo"] < r["fd"] < r["fd_hi"] and r["mse_lo"] <= r["mse"] <= r["mse_hi"]
        assert (
            r["quantize_seconds"] > 0 and r["quantize_cpu_seconds"] > 0 and r["peak_mem_kind"] == "rss_delta"
        )
        assert r["calib_seed"] == 1000 and r["seed"] is not None and r["torch_version"] and r["method_config"]


def test_grid_gives_dilation_to_dilatequant_only():
    cfg = ds.DilateQuantSweepConfig(bits=("w4a4", "W8A8"), calib_sizes=(32, 64), reps=2)
    points = ds.grid(cfg)
    assert len(points) == 2 * (3 + 2) * 2 * 2 and cfg.bits == ("w4a4", "w8a8")
    assert all(not p["dilation"] for p in points if p["method"] != "dilatequant")
    assert {p["dilation"] for p in points if p["method"] == "dilatequant"} == {True, False}
    assert all(p["iters"] == 0 for p in points if p["method"] == "qdiffusion")
    spec = ds.build_spec(cfg)
    assert spec.objectives == ("fd",) and len(spec.grid) == len(points)


def test_tpe_mode_searches_the_dilation_cap_and_learning_rates():
    cfg = ds.DilateQuantSweepConfig(mode="tpe")
    spec = ds.build_spec(cfg)
    assert cfg.study.sampler == "tpe" and cfg.study.n_trials == 12
    assert spec.space["max_scale"] == ("float", 1.0, 64.0, "log") and spec.space["weight_lr"][0] == "float"
    assert (
        spec.grid is None
        and ds.DilateQuantSweepConfig(
            task=ds.DiffusionQuantTaskConfig(model="/x"),
        ).quality_objective()
        == "mse"
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bits": ("w16a16",)}, "w2..8"),
        ({"bits": ("fp",)}, "quantized"),
        ({"methods": ("dilatequnt",)}, "methods must be"),
        ({"calib_sizes": (8,)}, "smaller than the batch"),
        ({"calib_sizes": (10_000,)}, "task.trajectories"),
        ({"mode": "bayes"}, "mode must be"),
        ({"max_scale_range": (0.5, 4.0)}, "max_scale_range"),
    ],
)
def test_bad_sweep_config_is_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ds.DilateQuantSweepConfig(**kwargs)


def test_cli_bad_input_exits_2_without_traceback(tmp_path, capsys):
    rc = ds.main(["--out", str(tmp_path), "--set", 'bits=["w16a16"]'])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "w16a16" in err


@pytest.mark.slow  # ~35 CPU-seconds: 12 quantizations at tiny sizes
def test_bench_quick_prints_tables_claims_and_summary(tmp_path, capsys):
    from sweeps import bench_dilatequant as bd

    assert bd.main(["--quick", "--out", str(tmp_path), "--run-id", "q", "--no-progress"]) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "bench_dilatequant" / "q"
    assert "real-vs-real digit-FD at 8 samples" in out and "paper_verdict" in out
    for name in ("quality.md", "cost.md", "claims.md", "paper_claims.md", "trials.csv", "fd_vs_bits.png"):
        assert (run_dir / name).is_file()
    summary = out.strip().splitlines()[-1]
    for key in (
        "dq_beats_efficientdm_paper=",
        "dq_close_to_qat_paper=",
        "qat_time_over_dq_paper=",
        "real_fd=",
        "fd_noise_floor=",
    ):
        assert key in summary


def test_bench_paper_verdicts():
    from methods.metrics.stats import Estimate
    from sweeps.bench_dilatequant import DilateQuantBenchConfig, paper_verdict

    def e(v, lo, hi):
        return Estimate(v, lo, hi, 3, 0.95, "t")

    assert paper_verdict(e(5, 3, 7), floor=1) == "supported"
    assert paper_verdict(e(5, 3, 7), floor=6) == "not distinguishable"  # inside the noise floor
    assert paper_verdict(e(-5, -7, -3), floor=1) == "not supported"
    assert paper_verdict(e(1, -1, 3), floor=0) == "not distinguishable"
    assert paper_verdict(e(0.5, -1, 2), floor=3, closeness=True) == "supported"
    assert paper_verdict(e(5, 4, 6), floor=3, closeness=True) == "not supported"
    assert paper_verdict(e(3, 1, 5), floor=3, closeness=True) == "not distinguishable"
    with pytest.raises(ConfigError, match="seeds must be >= 3"):
        DilateQuantBenchConfig(seeds=2)
    with pytest.raises(ConfigError, match="smaller than the batch"):
        DilateQuantBenchConfig(calib=16, batch_size=32)
    with pytest.raises(ConfigError, match="w2..8"):
        DilateQuantBenchConfig(bits=("w16a16",))


def test_shard_point_quantizer_keeps_the_default_grid_unchanged():
    """The CacheQuant grid's points carry exactly its four fields (its explicit grid must match its
    space), so the default grid and its rows are unchanged; a composed point names its quantizer."""
    from actors.model_shard import ShardPoint
    from sweeps import cachequant_grid as cg

    points = cg.grid(cg.CacheQuantGridConfig())
    assert points and all(set(p) == set(cg.POINT_FIELDS) for p in points)
    assert len(cg.build_spec(cg.CacheQuantGridConfig()).grid) == len(points)
    default = ShardPoint(2, "dps", "w8a8", "both")
    assert ShardPoint.from_dict({**default.to_dict(), "quantizer": "qdiffusion"}) == default
    composed = ShardPoint(2, "dps", "w4a4", "both", quantizer="dilatequant")
    assert (
        composed.to_dict()["quantizer"] == "dilatequant"
        and ShardPoint.from_dict(composed.to_dict()) == composed
    )
    cfg = composed.method_config(calib_samples=8)
    assert cfg.quantizer == "dilatequant" and default.method_config(8).quantizer == "qdiffusion"
    with pytest.raises(ConfigError, match="quantizer must be one of"):
        ShardPoint(quantizer="dilate").method_config(8)
