"""Every entry point works from a plain shell (issue 21, row 13).

`python sweeps/arena_convergence.py` without `RAY_AUTH_MODE` exported used to crash:
`actors.arena_voter` imported ray before `cluster` set the auth mode, so the driver ran with auth
"disabled" against the token-auth GCS it started (`AuthenticationError: Failed to start GCS`).
The environment defaults now live in `actors/__init__.py` and run whichever evfarm module is
imported first. Each sweep runs here in a subprocess with a clean environment: no RAY_AUTH_MODE,
no RAY_ADDRESS, no PYTHONPATH, a temporary HOME (Ray writes its token there), only PATH, and a
private TMPDIR: a plain `ray.init()` attaches to the cluster of the last `ray start` recorded
under the temp directory, and on a shared machine that may be anyone's. The cheap sweeps run in
the default tier; the rest are `slow`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from entry_points import BENCHES, ENTRY_POINTS

REPO = Path(__file__).resolve().parent.parent

TTAQ_SMALL = {"corruptions": ["gaussian_noise"], "batch_size": 16, "batches_per_domain": 2,
              "calib_images": 32, "ptq_iters": 0, "n_batches": 2}

SWEEPS = {
    "demo_sweep": ["--set", "C=[1.0]", "--set", "sizes=[8]"],
    "arena_convergence": [
        "--set", 'arms=["ksort:4", "elo:2"]', "--set", "noises=[0.0]", "--set", "replicates=1",
        "--set", "task.n_models=10", "--set", "task.window=30", "--set", "task.max_votes=400",
        "--set", "task.horizons={elo=1500}", "--set", "task.board_every=20",
        "--set", "task.random_batch_votes=100",
    ],
    "roofline_sweep": [
        "--set", 'models=["Llama-2-7b"]', "--set", 'devices=["nvidia_A100"]',
        "--set", 'bits=["W16A16KV16"]', "--set", "seqs=[1024]",
    ],
    "cachequant_grid": [
        "--set", 'task.model="untrained"', "--set", "task.steps=4", "--set", "task.samples=4",
        "--set", "task.calib_samples=2", "--set", "intervals=[2]", "--set", 'schedules=["dps"]',
        "--set", 'bits=["w8a8"]',
    ],
    "ptq_sweep": [
        "--set", 'models=["cnn-bn-digits"]', "--set", 'methods=["minmax"]', "--set", 'bits=["W4A4"]',
        "--set", "calib_sizes=[32]",
    ],
    "ttaq_stream": [
        "--set", 'bits=["W4A4"]', "--set", 'tta=["tent"]', "--set", 'ttaq=["none"]',
        "--set", 'label_orders=["balanced"]', "--set", "study.actors=1",
        *[a for k, v in TTAQ_SMALL.items() for a in ("--set", f"task.{k}={json.dumps(v)}")],
    ],
    "galvo_farm": [
        "--rig", "search", "--sampler", "grid", "--rigs", "2", "--set", 'search.methods=["uniform"]',
        "--set", "search.budgets=[30]", "--set", "search.scenes=2", "--set", "search.curve_points=5",
    ],
    "saqsam_sweep": [
        "--set", "task.test_images=4", "--set", "task.iters=2", "--set", "calib_sizes=[2]",
        "--set", 'methods=["minmax"]', "--set", 'bits=["w4a4"]',
    ],
    "sltnet_sweep": ["--set", "study.n_trials=2", "--set", "study.actors=1", "--set", "time_steps=[1]"],
    "dilatequant_sweep": [
        "--set", "task.steps=2", "--set", "task.samples=8", "--set", "task.trajectories=4",
        "--set", "task.batch_size=4", "--set", "task.fd_groups=4", "--set", 'methods=["qdiffusion"]',
        "--set", 'bits=["w4a4"]', "--set", "calib_sizes=[4]", "--set", "tpe_calib=4",
        "--set", "study.actors=1",
    ],
}
CHEAP = ("demo_sweep", "arena_convergence", "roofline_sweep")


@pytest.fixture(autouse=True)
def private_tmpdir(monkeypatch):
    """A short private TMPDIR (Ray's unix sockets live below it and must stay under 107 bytes)."""
    path = tempfile.mkdtemp(prefix="evps-", dir="/tmp")
    monkeypatch.setenv("EVFARM_TEST_TMPDIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def plain_env(home: Path) -> dict[str, str]:
    """What a fresh login shell would have: a PATH, a HOME and a TMPDIR, nothing evfarm or Ray set."""
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    return {"PATH": path, "HOME": str(home), "TMPDIR": os.environ["EVFARM_TEST_TMPDIR"]}


def run_plain(args: list[str], home: Path, timeout: float = 540) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *args]
    return subprocess.run(cmd, cwd=REPO, env=plain_env(home), capture_output=True, text=True, timeout=timeout)


def test_every_sweep_has_a_plain_shell_configuration():
    """A new sweep must join the table above (benches run with --dry-run, below)."""
    assert sorted(SWEEPS) == sorted(n for n in ENTRY_POINTS if n not in BENCHES)


@pytest.mark.parametrize(
    "sweep", [s if s in CHEAP else pytest.param(s, marks=pytest.mark.slow) for s in SWEEPS]
)
def test_row13_every_sweep_runs_from_a_plain_shell(sweep, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    argv = [f"sweeps/{sweep}.py", "--out", str(tmp_path / "out"), "--no-progress", "--num-cpus", "2"]
    proc = run_plain([*argv, *SWEEPS[sweep]], home)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("summary: "), out[-2000:]
    assert "AuthenticationError" not in out and "Traceback" not in out
    assert (home / ".ray" / "auth_token").is_file()  # token auth was on, its token in the temp HOME


@pytest.mark.slow
@pytest.mark.parametrize("bench", BENCHES)
def test_row13_every_bench_parses_and_plans_from_a_plain_shell(bench, tmp_path):
    proc = run_plain([f"sweeps/{bench}.py", "--dry-run", "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "summary: dry_run=1"


@pytest.mark.slow
def test_row13_evfarm_cluster_up_and_down_from_a_plain_shell(tmp_path):
    from cluster.headnode import free_port

    evfarm = str(Path(sys.executable).with_name("evfarm"))
    port, dport = str(free_port()), str(free_port())
    up = subprocess.run(
        [evfarm, "cluster", "up", "--port", port, "--dashboard-port", dport, "--num-cpus", "1"],
        env=plain_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    down = subprocess.run(
        [evfarm, "cluster", "down", "--port", port], env=plain_env(tmp_path), capture_output=True, text=True,
        timeout=300,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr


def test_row13_env_defaults_are_set_before_ray_whatever_is_imported_first(tmp_path):
    """Importing a ray-importing actor module first (what arena_convergence does) still leaves
    ray in token mode with a loopback node IP; ray itself is not imported by the defaults."""
    code = (
        "import sys, os\n"
        "import actors\n"
        "assert 'ray' not in sys.modules, 'the defaults must not import ray'\n"
        "import actors.arena_voter\n"
        "import ray\n"
        "from ray._raylet import AuthenticationMode, get_authentication_mode\n"
        "print(os.environ['RAY_AUTH_MODE'], get_authentication_mode() == AuthenticationMode.TOKEN,\n"
        "      ray.util.get_node_ip_address(), os.environ['HF_HUB_OFFLINE'])\n"
    )
    proc = run_plain(["-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + code], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["token", "True", "127.0.0.1", "1"]


def test_row13_ray_imported_before_evfarm_is_refused_with_the_fix(tmp_path):
    """A user script that imports ray before any evfarm module gets a one-paragraph error that
    says what to do, not `AuthenticationError: Failed to start GCS` (and no Ray is started)."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "import ray\n"
        "from cluster.connect import connect\n"
        "from methods.errors import EvfarmUserError\n"
        "try:\n"
        "    connect(num_cpus=1, local=True)\n"
        "except EvfarmUserError as exc:\n"
        "    print('refused:', exc)\n"
        "print('initialized:', ray.is_initialized())\n"
    )
    proc = run_plain(["-c", code], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: ray was imported before evfarm set RAY_AUTH_MODE=token" in proc.stdout
    assert "Import an evfarm module" in proc.stdout and "initialized: False" in proc.stdout
