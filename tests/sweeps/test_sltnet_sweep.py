"""sweeps/sltnet_sweep.py: config checks, the search space, and one tiny end-to-end streaming run."""
from __future__ import annotations

import pytest

from methods.errors import ConfigError
from sweeps import sltnet_sweep as ss


def test_space_and_config_checks():
    cfg = ss.SLTNetSweepConfig()
    space = ss.search_space(cfg)
    assert set(space) == {"kind", "time_steps", "v_threshold", "decay", "shot_noise_hz", "stream_seed"}
    wide = ss.search_space(ss.SLTNetSweepConfig(widths=(8, 16), train_steps=5))
    assert wide["base"] == ("categorical", [8, 16]) and wide["train_steps"] == ("categorical", [5])
    with pytest.raises(ConfigError, match="train_steps"):
        ss.SLTNetSweepConfig(bins=(3,))
    with pytest.raises(ConfigError, match="kinds"):
        ss.SLTNetSweepConfig(kinds=("sltnet-xl",))
    rows = [{"miou": 0.5, "energy_uj": 1.0}, {"miou": 0.4, "energy_uj": 2.0}, {"miou": 0.6, "energy_uj": 3.0}]
    assert ss.pareto(rows) == [rows[0], rows[2]]


def test_stream_sweep_end_to_end(ray_local, tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--run-id", "r", "--no-progress", "--stream", "--sampler", "grid",
            "--set", 'kinds=["sltnet","sltnet-ann"]', "--set", "time_steps=[1]", "--set", "v_threshold=[1.0]",
            "--set", "decay=[0.25]", "--set", "shot_noise_hz=[0.5]", "--set", "task.windows_per_trial=2",
            "--set", "task.window_us=20000"]
    rc = ss.main(argv)
    out = capsys.readouterr().out
    run_dir = tmp_path / "sltnet_sweep" / "r"
    summary = out.strip().splitlines()[-1]
    assert rc == 0 and summary.startswith("summary: ") and "complete=2" in summary, out[-2000:]
    assert "stream_rows=4" in summary  # one row per window per trial, landed chunk by chunk
    assert (run_dir / "miou_vs_energy.png").stat().st_size > 1000
