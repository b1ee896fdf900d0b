"""`evfarm doctor`: what is installed, how Ray will authenticate, which GPUs are visible, and
what is missing — each problem with the command that fixes it."""

from __future__ import annotations

import importlib
import os
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
