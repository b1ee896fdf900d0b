"""`evfarm doctor`: what is installed, how Ray will authenticate, where Ray's ports bind, which
GPUs are visible, and what is missing — each problem with the command that fixes it."""

from __future__ import annotations

import importlib
import os
import textwrap
from pathlib import Path

from cluster.rundir import package_versions
from cluster.security import token_source

REQUIRED = ("torch", "torchvision", "ray", "optuna", "pyarrow", "duckdb", "numpy", "scipy")
OPTIONAL = (
    "diffusers",
    "timm",
    "segment_anything",
    "spikingjelly",
    "imagecorruptions",
    "pycocotools",
    "trueskill",
    "openskill",
    "optuna_dashboard",
    "polars",
)
# Measured with Ray 2.60 (tests/cluster/test_loopback.py; README "On a cluster").
LOOPBACK_NOTE = (
    "local clusters (a sweep's embedded one, `evfarm cluster up`) take node IP 127.0.0.1: GCS, "
    "raylet, workers, driver, agents, metrics, client server and dashboard all bind loopback"
)
FIREWALL_NOTE = (
    "Ray cannot keep a node that other machines reach on loopback: on a real node IP (a multi-node "
    "`ray start`, or {switch}=1) the GCS (6379), the raylet's node- and object-manager ports, "
    "every worker and driver (10002-19999 under `ray start`) and the dashboard agent's gRPC port bind all "
    "interfaces; the metrics export and the autoscaler (44217) and dashboard (44227) metrics bind "
    "0.0.0.0; the dashboard agent (52365), the runtime-env agent and the client server (10001) "
    "bind the node IP; only the dashboard (8265) stays on 127.0.0.1. Firewall all of them to "
    "cluster peers; token auth does not encrypt."
)
FIX_INSTALL = "run `make install` (creates .venv with torch==2.14.1 torchvision==0.29.1 first, then the lock)"


def _check_import(name: str) -> str | None:
    try:
        importlib.import_module(name)
        return None
    except Exception as exc:  # any import failure is a finding, not a crash of the doctor
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def run_doctor() -> int:
    problems: list[str] = []
    print("versions:")
    for k, v in package_versions().items():
        print(f"  {k:18s} {v}")
    print("imports:")
    for name in REQUIRED + OPTIONAL:
        err = _check_import(name)
        print(f"  {name:18s} {'ok' if err is None else 'FAILED ' + err}")
        if err is not None and name in REQUIRED:
            problems.append(f"{name} does not import ({err}): {FIX_INSTALL}")
        elif err is not None and name == "torchvision":
            problems.append(
                f"torchvision does not load beside torch ({err}): install the pair "
                f"`pip install torch==2.14.1 torchvision==0.29.1`"
            )
        elif err is not None:
            problems.append(f"optional {name} does not import ({err}): {FIX_INSTALL}")
    mode = os.environ.get("RAY_AUTH_MODE", "(unset)")
    src = token_source()
    print(f"ray auth: RAY_AUTH_MODE={mode}, token from {src or 'nowhere yet'}")
    if mode != "token":
        problems.append(
            "RAY_AUTH_MODE is not 'token': export RAY_AUTH_MODE=token (evfarm's entry points set it)"
        )
    if src is None:
        print(
            "  (evfarm creates ~/.ray/auth_token on first connect; "
            "`ray get-auth-token --generate` also works)"
        )
    _network_report(problems)
    print(f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '(unset)')}")
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            print(f"gpu: CUDA {torch.version.cuda}, {len(names)} visible: {', '.join(names)}")
        else:
            print("gpu: none visible (CPU only; sweeps take --device cuda where a GPU is present)")
    except Exception as exc:  # reported above as an import problem
        print(f"gpu: cannot probe ({exc})")
    weights = Path(__file__).resolve().parent.parent / "sims" / "zoo" / "weights"
    found = sorted(p.stem for p in weights.glob("*.safetensors")) if weights.is_dir() else []
    print(f"zoo weights: {', '.join(found) or 'none'}")
    if not found:
        problems.append("no committed zoo weights found: run `evfarm zoo train NAME` for the models you need")
    if problems:
        print("problems:")
        for p in problems:
            print(f"  - {p}")
        return 1
    print("all checks passed")
    return 0


def _network_report(problems: list[str]) -> None:
    """Where Ray's ports bind: the loopback switch, and what recorded head nodes listen on now."""
    from actors import LOOPBACK_SWITCH

    switch = os.environ.get(LOOPBACK_SWITCH)
    if switch == "0":
        line = f"ray network: {LOOPBACK_SWITCH}=0, {LOOPBACK_NOTE}"
    else:
        line = (
            f"ray network: {LOOPBACK_SWITCH}={switch or '(unset)'}: an embedded cluster takes this "
            f"host's outward address and listens on every interface (`evfarm cluster up` still pins "
            f"loopback); unset it to get evfarm's default ({LOOPBACK_SWITCH}=0)"
        )
    print(textwrap.fill(line, width=100, subsequent_indent="  "))
    note = FIREWALL_NOTE.format(switch=LOOPBACK_SWITCH)
    print(textwrap.fill(note, width=100, initial_indent="  ", subsequent_indent="  "))
    records = Path(os.environ.get("HOME", "~")).expanduser() / ".evfarm"
    for path in sorted(records.glob("cluster-*.json")) if records.is_dir() else []:
        _head_report(path, problems)


def _head_report(path: Path, problems: list[str]) -> None:
    from cluster import headnode
    from methods.errors import EvfarmUserError

    try:
        port = int(path.stem.removeprefix("cluster-"))
        st = headnode.status(port)
    except (ValueError, EvfarmUserError) as exc:
        print(f"  head node record {path}: unreadable ({exc})")
        return
    rows = st["listening_now"]
    exposed = st["non_loopback_now"]
    where = "all loopback" if not exposed else f"NOT loopback: {', '.join(exposed)}"
    print(
        f"  head node on port {port}: {st['alive']}/{st['recorded']} recorded processes alive, "
        f"{len(rows)} listening sockets, {where}"
    )
    if exposed:
        problems.append(
            f"the head node on port {port} listens beyond loopback ({', '.join(exposed)}): stop it "
            f"with `evfarm cluster down --port {port}` and start it again with `evfarm cluster up`"
        )
    elif st["alive"] == 0:
        print(f"    (nothing of it runs any more: `evfarm cluster down --port {port}` clears the record)")
