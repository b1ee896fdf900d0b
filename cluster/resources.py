"""Named actor profiles: the only place that says how many CPUs/GPUs an actor asks for.

Sweeps refer to profiles by name, never by raw numbers (DESIGN decision 6, infra.md C.3).
Countable virtual hardware is a custom resource (`galvo_rig`); the result sink is pinned to the head
node with the `node:__internal_head__` resource, the pattern Ray Train's state actor uses.
Failure policy (infra.md A.4): `max_restarts > 0` so Ray restarts a dead actor, and
`max_task_retries = 0` so the driver — which knows the trial — decides about retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from methods.errors import ConfigError, EvfarmUserError
from methods.registry import REPLACE_FIELDS, Registry


@dataclass(frozen=True)
class Profile:
    """Resources and restart policy of one kind of actor.

    Args:
        num_cpus: logical CPUs reserved while the actor lives.
        num_gpus: GPUs (fractions allowed, e.g. 0.5 for two shards per GPU).
        resources: custom resources, e.g. {"galvo_rig": 1}.
        max_restarts: how often Ray restarts the actor after its process dies (-1 = forever).
        torch_threads: what the actor passes to `torch.set_num_threads` (2 processes × 2 threads
            on 2 cores run 10-20x slower, env.md).
    """

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    max_restarts: int = 3
    torch_threads: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ConfigError(
                f"Profile resources must be >= 0, got cpus={self.num_cpus} gpus={self.num_gpus}."
            )

    def options(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for `ActorClass.options(...)`."""
        opts: dict[str, Any] = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "max_restarts": self.max_restarts,
            "max_task_retries": 0,
        }
        if self.resources:
            opts["resources"] = dict(self.resources)
        opts.update(overrides)
        return opts


# `PROFILES.create(name, **fields)` is that profile with some fields replaced (e.g. num_gpus=0.25).
PROFILES: Registry[Profile] = Registry("actor profile", Profile, creator=REPLACE_FIELDS)

PROFILES.register("evaluator_cpu1")(Profile(1.0, description="one-CPU evaluator (demo, small models)"))
PROFILES.register("calibrator_cpu2")(Profile(2.0, torch_threads=2, description="PTQ calibration worker"))
PROFILES.register("shard_cpu1")(Profile(1.0, description="diffusion model shard on a CPU"))
PROFILES.register("shard_gpu1")(Profile(1.0, num_gpus=1.0, description="model shard on a whole GPU"))
PROFILES.register("shard_gpu_half")(Profile(1.0, num_gpus=0.5, description="two shards per GPU"))
PROFILES.register("tta_stream_cpu1")(Profile(1.0, description="one test-time-adaptation stream"))
PROFILES.register("voter_cpu_half")(Profile(0.5, description="simulated arena voters"))
PROFILES.register("rig_virtual")(
    Profile(1.0, resources={"galvo_rig": 1.0}, description="one virtual galvo rig (custom resource)")
)
# sweeps/bench_scale.py: hundreds of zero-cost evaluators on one machine, and the same on the worker
# nodes of a `ray.cluster_utils.Cluster` (which carry the custom `bench_scale_slot` resource)
PROFILES.register("bench_scale_frac")(
    Profile(0.005, description="bench_scale: 1/200 CPU evaluator (zero-cost)")
)
PROFILES.register("bench_scale_cluster")(
    Profile(0.005, resources={"bench_scale_slot": 1.0}, description="bench_scale: actor on a worker node")
)
PROFILES.register("sink_head")(
    Profile(
        0.0,
        resources={"node:__internal_head__": 0.001},
        max_restarts=-1,
        description="the run's result sink, pinned to the head node",
    )
)


def actor_options(profile: str, **overrides: Any) -> dict[str, Any]:
    """`.options(...)` kwargs of a named profile (unknown names list the known ones)."""
    return PROFILES.get(profile).options(**overrides)


def actors_that_fit(profile: str, wanted: int) -> int:
    """How many actors of `profile` the connected cluster can hold at once (at most `wanted`).

    Actors that cannot be placed would wait forever and their trials with them, so a cluster that
    holds none is an error and one that holds fewer gets a smaller pool (with a message).
    """
    prof = PROFILES.get(profile)
    need = {"CPU": prof.num_cpus, "GPU": prof.num_gpus, **prof.resources}
    import ray

    total = ray.cluster_resources()
    fits = wanted
    for name, amount in need.items():
        if amount > 0:
            fits = min(fits, int(total.get(name, 0.0) // amount + 1e-9))
    if fits < 1:
        have = {k: total.get(k, 0.0) for k in need}
        raise EvfarmUserError(
            f"The cluster cannot place a single actor of profile {profile!r}: it needs {need} per actor, "
            f"the cluster has {have}. Start the cluster with those resources (e.g. `evfarm cluster up "
            f"--resources ...`), or choose another profile with --set study.profile=NAME."
        )
    if fits < wanted:
        print(f"note: the cluster holds {fits} actor(s) of profile {profile!r}, not {wanted}; using {fits}")
    return fits
