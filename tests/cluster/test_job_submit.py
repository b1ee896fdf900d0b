"""End to end: `evfarm cluster up`, then `ray job submit --working-dir . -- python sweeps/demo_sweep.py`
with token auth; results land outside the job's temporary working directory (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import cli, headnode

REPO = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.slow


def submit(dashboard_url: str, *entrypoint: str, timeout: float = 480) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_API_SERVER_ADDRESS": dashboard_url}
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    return subprocess.run(
        [ray_bin, "job", "submit", "--working-dir", str(REPO), "--", *entrypoint],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_sweep_as_a_ray_job_writes_results_that_outlive_the_job():
    port, dport = headnode.free_port(), headnode.free_port()
    assert (
        cli.main(["cluster", "up", "--port", str(port), "--dashboard-port", str(dport), "--num-cpus", "2"])
        == 0
    )
    state = headnode.load_state(port)
    try:
        proc = submit(
            state.dashboard_url,
            "python",
            "sweeps/demo_sweep.py",
            "--no-progress",
            "--set",
            "C=[0.1, 1.0]",
            "--set",
            "sizes=[8]",
        )
    finally:
        cli.main(["cluster", "down", "--port", str(port)])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "summary: " in out and "complete=2" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("run directory: "))
    run_dir = Path(line.split("run directory: ")[1].split("  ")[0])
    assert run_dir.is_relative_to(Path.home() / "evfarm-results")  # not the job's temporary copy
    assert list(run_dir.glob("part-*.parquet")) and (run_dir / "run.json").is_file()
