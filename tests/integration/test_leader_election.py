"""Two operator processes with leader election: only the Lease holder reconciles (the standby
has the run queued and does not touch it), and when the leader is killed the standby takes the
Lease within 30 s and carries on with the same children."""

from __future__ import annotations

import re

import pytest

from tests.support.operator_env import operator_cluster
from tests.support.operator_proc import OperatorProcess, http_get
from tests.support.trainingruns import run_yaml

pytestmark = pytest.mark.cluster
__all__ = ["operator_cluster"]  # fixture


def sample(op: OperatorProcess, metric: str) -> float:
    """The sum of a metric's samples on the process's /metrics (0 when absent)."""
    _, text = http_get(op.url("metrics", "/metrics"))
    return sum(float(v) for v in re.findall(rf"^{re.escape(metric)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def holder(cluster, namespace: str) -> str:
    lease = cluster.get("lease", "capstan-operator", namespace) or {}
    return (lease.get("spec") or {}).get("holderIdentity") or ""


def uids(cluster, namespace: str) -> dict[str, list[str]]:
    return {
        kind: [o["metadata"]["uid"] for o in cluster.list(kind, namespace, "capstan.dev/owner=held")]
        for kind in ("jobs", "services", "configmaps")
    }


def test_only_the_leader_reconciles_and_a_standby_takes_over(operator_cluster, namespace, tmp_path):
    cluster = operator_cluster
    env = {"CAPSTAN_LEADER_ELECTION": "true", "CAPSTAN_LEASE_NAMESPACE": namespace}
    a = OperatorProcess(cluster, namespace, tmp_path / "a.log", env=env)
    b = OperatorProcess(cluster, namespace, tmp_path / "b.log", env=env)
    a.start()
    try:
        first = cluster.wait_for("operator a to take the Lease", lambda: holder(cluster, namespace), 60)
        b.start()
        cluster.wait_for(
            "operator b's metrics endpoint", lambda: http_get(b.url("metrics", "/metrics"))[0], 60
        )
        # Pods that can never be placed (8 GPUs a node): children exist, no trainer runs.
        spec = {"resources": {"minNodes": 1, "maxNodes": 1, "gpusPerNode": 8}}
        spec["scheduling"] = {"gangTimeoutSeconds": 3600}
        cluster.apply(
            run_yaml("held", "s3://nowhere/ckpt/held", {"uri": "s3://nowhere/data"}, **spec), namespace
        )
        cluster.wait_for("operator a to create the run's Job", lambda: uids(cluster, namespace)["jobs"], 60)
        cluster.wait_for(
            "the standby to have the run in its queue", lambda: sample(b, "workqueue_depth") >= 1, 60
        )
        assert holder(cluster, namespace) == first
        assert sample(b, "capstan_reconciles_total") == 0, b.tail()
        children = uids(cluster, namespace)
        assert all(len(v) == 1 for v in children.values()), children

        a.kill()
        cluster.wait_for(
            "operator b to take the Lease after a was killed",
            lambda: holder(cluster, namespace) not in ("", first),
            timeout=30,
        )
        cluster.wait_for("operator b to reconcile", lambda: sample(b, "capstan_reconciles_total") > 0, 30)
        assert uids(cluster, namespace) == children, "the new leader recreated children"
        assert "leading as" in b.tail(20000)
    finally:
        a.kill()
        b.kill()
