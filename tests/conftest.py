"""Shared test set-up: a temporary HOME, offline hubs, token auth, one thread per torch process.

The environment is set at import time, before any test imports ray or huggingface_hub, so no test
touches the real home directory or a developer's Ray cluster.
"""
from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="evfarm-test-home-")
os.environ["HOME"] = _HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keeps Ray from swapping 127.0.0.1 for the outward IP
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("EVFARM_RESULTS", None)

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def _ray_teardown():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def ray_local(_ray_teardown):
    """A private local Ray cluster (2 CPUs), started once and shared by the tests that need one.

    A module that needs its own cluster (tests/cluster/test_multinode.py) shuts it down; the next
    user of this fixture then starts a fresh one.
    """
    ensure_ray()


def ensure_ray() -> None:
    import ray

    from cluster.connect import connect

    if not ray.is_initialized():
        connect(num_cpus=2, local=True, log_to_driver=False)
