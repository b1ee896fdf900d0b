"""methods/plotting.py: figures on an Agg canvas, no pyplot, no backend switch, atomic PNG writes.

The second half calls every plot function of the project on a few fake rows and checks that each
writes a valid PNG and leaves pyplot's figure manager empty. pyplot is imported only here, to look.
"""

from __future__ import annotations

import ast
import functools
import json
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest

from methods.plotting import colormap, legend_handle, new_figure, save_figure

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("methods", "sims", "actors", "cluster", "sweeps")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; fails unless the file is a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG: starts with {head[:8]!r}"
    assert head[12:16] == b"IHDR", f"{path.name}: first chunk is {head[12:16]!r}, expected IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(autouse=True)
def _no_pyplot_figures():
    plt.close("all")  # whatever another test left: this module checks only what it causes
    yield
    assert plt.get_fignums() == [], "a figure was registered with pyplot's figure manager"


def test_save_figure_writes_a_png_of_the_requested_size(tmp_path):
    fig, ax = new_figure(figsize=(4, 3))
    ax.plot([0, 1, 2], [1, 0, 2], "o-")
    out = save_figure(fig, tmp_path / "sub" / "line.png", dpi=50)
    assert out == tmp_path / "sub" / "line.png"
    assert png_size(out) == (200, 150)
    assert [p.name for p in out.parent.iterdir()] == ["line.png"]  # no temp file left behind


def test_save_figure_replaces_whole_or_keeps_the_old_file(tmp_path):
    path = tmp_path / "plot.png"
    fig, _ = new_figure(figsize=(2, 2))
    save_figure(fig, path, dpi=20)
    assert png_size(path) == (40, 40)
    save_figure(fig, path, dpi=30)
    assert png_size(path) == (60, 60)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        save_figure(fig, path, format="no-such-format")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_new_figure_shapes_axes_like_subplots():
    _, ax = new_figure()
    assert hasattr(ax, "plot")
    _, row = new_figure(1, 3, sharey=True)
    assert row.shape == (3,)
    _, grid = new_figure(1, 1, squeeze=False)
    assert grid.shape == (1, 1)
    fig, _ = new_figure(2, 2, figsize=(3, 2))
    assert tuple(fig.get_size_inches()) == (3, 2)


def test_colormap_and_legend_handle(tmp_path):
    assert colormap("tab10")(1) == colormap("tab10").colors[1] + (1.0,)
    fig, ax = new_figure()
    ax.legend(handles=[legend_handle(color="k", marker="o", ls="", label="x")])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["x"]
    png_size(save_figure(fig, tmp_path / "legend.png", dpi=30))


def test_importing_the_project_leaves_the_backend_and_pyplot_alone(tmp_path):
    # A fresh interpreter: this test process has imported pyplot already.
    code = f"""
import importlib, pkgutil, sys
import matplotlib
before = matplotlib.get_backend(auto_select=False)
for pkg in {PACKAGES!r}:
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        importlib.import_module(info.name)
from methods.plotting import new_figure, save_figure
fig, ax = new_figure()
ax.plot([0, 1])
save_figure(fig, {str(tmp_path / "x.png")!r}, dpi=20)
after = matplotlib.get_backend(auto_select=False)
assert after == before, f"backend changed from {{before!r}} to {{after!r}}"
assert "matplotlib.pyplot" not in sys.modules, "something imported matplotlib.pyplot"
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def _pyplot_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith("matplotlib.pyplot")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("matplotlib.pyplot"):
                found.append(f"from {node.module} import ...")
            elif node.module == "matplotlib":
                found += [f"from matplotlib import {a.name}" for a in node.names
                          if a.name in ("pyplot", "use")]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use"
              and isinstance(node.func.value, ast.Name) and node.func.value.id in ("matplotlib", "mpl")):
            found.append(f"{node.func.value.id}.use(...) at line {node.lineno}")
    return found


def test_no_project_file_uses_pyplot_or_switches_the_backend():
    here = Path(__file__).resolve()
    files = [p for d in (*PACKAGES, "tests") for p in (ROOT / d).rglob("*.py") if p != here]
    bad = {p.relative_to(ROOT).as_posix(): uses for p in files if (uses := _pyplot_uses(p))}
    assert not bad, f"plot through methods/plotting.py (new_figure, save_figure) instead: {bad}"


def test_the_check_would_catch_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                 "from matplotlib import pyplot\n")
    assert len(_pyplot_uses(f)) == 3


# ---- every plot function of the project, on fake rows ----------------------------------------

def test_study_plots(tmp_path):
    import optuna

    from cluster.plots import write_study_plots

    def objective(trial, n):
        x = trial.suggest_float("x", 0, 1)
        values = [x, 1 - x, x * x][:n]
        return values[0] if n == 1 else values

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for names in (("loss",), ("loss", "cost"), ("loss", "cost", "time")):
        study = optuna.create_study(directions=["minimize"] * len(names))
        study.optimize(functools.partial(objective, n=len(names)), n_trials=4)
        run_dir = tmp_path / str(len(names))
        run_dir.mkdir()
        (path,) = write_study_plots(study, names, run_dir)
        assert path.name == ("optimization_history.png" if len(names) == 1 else "pareto_front.png")
        assert min(png_size(path)) > 100


def test_roofline_figure(tmp_path):
    from methods.roofline import roofline_figure
    from sims.hardware import get_device

    rows = [{"stage": s, "ops": 1e9, "arithmetic_intensity": ai, "time": 1e-3}
            for s, ai in (("prefill", 100.0), ("decode", 1.0))]
    fig = roofline_figure(rows, get_device("nvidia_H100"))
    assert min(png_size(save_figure(fig, tmp_path / "roof.png", dpi=40))) > 100


def test_bench_plots(tmp_path):
    from sweeps import bench_ksort, bench_ptq, bench_ttaq

    bench_ksort.plot({"curves": {f"{m} noise=0.0": {"votes": [1, 10, 100], "mse": [9.0, 2.0, 0.5]}
                                 for m in ("ksort", "elo")}}, tmp_path / "ksort.png")
    bench_ttaq.plot([{"method": m, "bits": "w4a8", "order": o, "mean": 0.3, "std": 0.02}
                     for m in ("tent", "ttaq") for o in bench_ttaq.ORDERS], tmp_path / "ttaq.png")
    bench_ptq.plot({"fp_top1": {"cnn": 0.9},
                    "rows": [{"model": "cnn", "bits": b, "method": m, "top1_mean": 0.8, "top1_std": 0.01}
                             for b in ("w4a8", "w8a8") for m in ("rtn", "brecq")]}, tmp_path / "ptq.png")
    for name in ("ksort", "ttaq", "ptq"):
        assert min(png_size(tmp_path / f"{name}.png")) > 100


def test_sweep_report_plots(tmp_path):
    from sweeps import arena_convergence, galvo_farm, ptq_sweep, ttaq_stream

    paths = [
        ptq_sweep._plot(tmp_path, [{"model": "cnn", "calib": 64, "method": m, "bits": b, "mbops": mb,
                                    "top1": 0.8, "top1_std": 0.01, "fp_top1": 0.9}
                                   for m in ("rtn", "brecq") for b, mb in (("w4a8", 1.0), ("w8a8", 2.0))]),
        ttaq_stream.plot_domains(tmp_path, {
            json.dumps({"bits": "w4a8", "label_order": lo, "tta": "tent", "ttaq": True, "stream_seed": 0}):
                {"gaussian_noise": 0.4, "fog": 0.3} for lo in ("balanced", "imbalanced")},
            ["gaussian_noise", "fog"]),
        arena_convergence.plot_curves(
            tmp_path,
            SimpleNamespace(noises=(0.0,), arms=("ksort", "elo"), task=SimpleNamespace(n_models=8)),
            [{"arm": a, "noise": 0.0, "replicate": 0, "votes_total": v, "rank_mse": 4.0 / v}
             for a in ("ksort", "elo") for v in (10, 100, 1000)]),
        galvo_farm.plot_objective_vs_params(
            tmp_path, [{"a": i, "b": 2 * i, "err": float(i)} for i in range(3)], "err", ["a", "b"]),
        galvo_farm.plot_recall_vs_time(
            tmp_path, [{"trial_number": 0, "method": "spiral"}],
            {0: [{"curve_shot": k, "curve_time_s": 0.1 * k, "curve_recall": k / 3} for k in (1, 2, 3)]},
            grid=True, front=set()),
        galvo_farm.plot_rmse_vs_noise(tmp_path, [
            {"tiers": "all", galvo_farm.RIG_PREFIX + "speckle_contrast": n, "rmse_mm": 0.1 + n,
             "rmse_true_params_mm": 0.05 + n, "static_rmse_mm": 1.0 + n} for n in (0.1, 0.5)]),
    ]
    for path in paths:
        assert min(png_size(path)) > 100, path


def test_zoo_sample_grid(tmp_path):
    import torch

    from sims.zoo.ddpm_digits import save_grid

    path = save_grid(torch.from_numpy(np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)),
                     tmp_path / "grid.png", nrow=3, title="t")
    assert min(png_size(path)) > 10


def test_zoo_sam_overlay(tmp_path):
    from sims.zoo.registry import load_zoo_model
    from sims.zoo.sam_shapes import NAME, save_overlay

    path = save_overlay(load_zoo_model(NAME), tmp_path / "overlay.png", n_images=2)
    assert min(png_size(path)) > 100
