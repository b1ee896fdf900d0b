"""A head + 2 node fake cluster (`ray.cluster_utils.Cluster`): actors asking for a custom resource
land on the nodes that have it; removing a node mid-sweep gets its trials retried elsewhere."""

from __future__ import annotations

import collections

import pytest

from cluster.results import read_table, summarise_trials
from cluster.security import ensure_token
from cluster.study import StudyConfig, StudyRunner
from cluster.testing import toy_spec

pytestmark = pytest.mark.cluster
FAST_HEALTH = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_initial_delay_ms": 0,
}


@pytest.fixture(scope="module")
def fake_cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()  # the shared single-node cluster; the next ray_local user restarts it
    ensure_token()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": FAST_HEALTH})
    rig_nodes = [cluster.add_node(num_cpus=1, resources={"galvo_rig": 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, rig_nodes
    ray.shutdown()
    cluster.shutdown()


def test_custom_resource_actors_land_on_rig_nodes_and_survive_node_loss(fake_cluster, tmp_path):
    cluster, rig_nodes = fake_cluster
    spec = toy_spec(study=StudyConfig(sampler="grid", actors=2, profile="rig_virtual"), sleep=0.4)
    runner = StudyRunner(spec, tmp_path, "multinode", progress=False)
    rig_ids = {n.node_id for n in rig_nodes}
    removed: dict[str, str] = {}

    def on_progress(outcome):
        if outcome.complete == 2 and not removed:
            victim = rig_nodes[1]
            removed["id"] = victim.node_id
            cluster.remove_node(victim)
            replacement = cluster.add_node(num_cpus=1, resources={"galvo_rig": 1})
            rig_ids.add(replacement.node_id)

    outcome = runner.run(on_progress=on_progress)
    trials = summarise_trials(read_table(tmp_path))
    complete = [r for r in trials if r["state"] == "COMPLETE"]
    assert collections.Counter((r["x"], r["y"]) for r in complete) == {
        (x, y): 1 for x in range(4) for y in range(3)
    }
    assert {r["node_id"] for r in complete} <= rig_ids  # never on the head, which has no galvo_rig
    assert len({r["node_id"] for r in complete}) >= 2
    failed = [r for r in trials if r["state"] == "FAIL"]
    assert failed, "removing a busy node must fail the trial it ran"
    for f in failed:
        retry = [r for r in complete if (r["x"], r["y"]) == (f["x"], f["y"])][0]
        assert retry["attempt"] > f["attempt"] and retry["node_id"] != removed["id"]
    assert outcome.retried == len(failed)
