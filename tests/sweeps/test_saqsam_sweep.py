"""The SAQ-SAM sweep end to end on the local cluster at tiny sizes: the method x bits grid and the
Optuna clip-ratio study beside PCC's choice; config checks and bad input (exit 2)."""
from __future__ import annotations

import pytest

from cluster.results import read_table, summarise_trials
from methods.errors import ConfigError
from sweeps import saqsam_sweep as ss

TASK = ["--set", "task.test_images=4", "--set", "task.val_images=3", "--set", "task.iters=2",
        "--set", "task.batch_size=2", "--set", "task.focus_images=1", "--set", "study.actors=1"]


def test_saqsam_grid_end_to_end(ray_local, tmp_path, capsys):
    grid = ["--set", 'methods=["minmax","saqsam"]', "--set", 'bits=["W4A4"]', "--set", "calib_sizes=[2]"]
    rc = ss.main(["--out", str(tmp_path), "--run-id", "g", "--no-progress", *TASK, *grid])
    out = capsys.readouterr().out
    run_dir = tmp_path / "saqsam_sweep" / "g"
    summary = out.strip().splitlines()[-1]
    assert rc == 0 and summary.startswith("summary: ") and "complete=2" in summary, out[-2000:]
    assert "w4a4.best=" in summary and "w4a4.saqsam=" in summary and "fp_box_ap=" in summary
    assert (run_dir / "ap_vs_bits.png").stat().st_size > 1000
    assert "| saqsam |" in (run_dir / "table.md").read_text()
    trials = [r for r in summarise_trials(read_table(run_dir)) if r["state"] == "COMPLETE"]
    assert sorted(r["method"] for r in trials) == ["minmax", "saqsam"]
    assert {r["bits"] for r in trials} == {"w4a4"}
    for r in trials:
        assert 0 <= r["box_ap"] <= 1 and 0 <= r["point_ap"] <= 1 and r["calib_seconds"] > 0
        assert 0 <= r["mean_focus_iou"] <= 1
    saq = next(r for r in trials if r["method"] == "saqsam")
    assert len(saq["clips"].split(",")) == 28 and saq["block_evals_saved"] > 0


def test_saqsam_clip_study_end_to_end(ray_local, tmp_path, capsys):
    study = ["--set", 'mode="clips"', "--set", "study.n_trials=2", "--set", "clip_calib=2",
             "--set", "clip_values=[0.9, 0.99, 0.999]"]
    rc = ss.main(["--out", str(tmp_path), "--run-id", "c", "--no-progress", *TASK, *study])
    out = capsys.readouterr().out
    run_dir = tmp_path / "saqsam_sweep" / "c"
    summary = out.strip().splitlines()[-1]
    assert rc == 0 and "complete=2" in summary, out[-2000:]
    assert "tpe_val_box_ap=" in summary and "pcc_val_box_ap=" in summary
    assert "PCC (analytic)" in (run_dir / "table.md").read_text()
    assert (run_dir / "clip_study.png").stat().st_size > 1000
    trials = [r for r in summarise_trials(read_table(run_dir)) if r["state"] == "COMPLETE"]
    for r in trials:
        assert all(r[f"clip_{i}"] in (0.9, 0.99, 0.999) for i in range(ss.N_DECODER_ATTENTIONS))
        assert r["pcc_val_box_ap"] == trials[0]["pcc_val_box_ap"]  # one PCC reference for the study


def test_clip_mode_uses_tpe():
    cfg = ss.SaqSamSweepConfig(mode="clips")
    assert cfg.study.sampler == "tpe" and cfg.study.n_trials == 12
    spec = ss.build_spec(cfg)
    assert spec.objectives == ("val_box_ap",) and len([k for k in spec.space if k.startswith("clip_")]) == 7


@pytest.mark.parametrize("kw,match", [
    ({"mode": "optuna"}, "mode must be"),
    ({"methods": ("saqsam", "adaround")}, "methods must be"),
    ({"bits": ("w1a1",)}, "w1a1"),
    ({"clip_values": (0.9, 1.2)}, r"\(0.5, 1\]"),
    ({"clip_values": (0.0,)}, r"\(0.5, 1\]"),
    ({"reps": 0}, "reps"),
])
def test_bad_config_is_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        ss.SaqSamSweepConfig(**kw)


def test_bad_bits_exit_2(tmp_path, capsys):
    rc = ss.main(["--out", str(tmp_path), "--dry-run", "--set", 'bits=["w1a4"]'])
    assert rc == 2 and "Traceback" not in capsys.readouterr().err
