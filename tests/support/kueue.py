"""Kueue in the test cluster, for the Kueue tests only (module scope): its controller manager
(built by `make install`) started against the session's cluster with waitForPodsReady on, and per
test a ClusterQueue with the two nodes' 8 GPUs of quota and a LocalQueue in the test's namespace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WAIT_FOR_PODS_READY_S = 45
"""WAIT_FOR_PODS_READY_S: Kueue evicts an admitted gang whose pods are not all Ready by then;
long enough for a trainer pod's start on a loaded 2-core machine."""
FLAVOR = "capstan-test-flavor"
GPUS = 8  # the session cluster: 2 nodes x 4 GPUs


@pytest.fixture(scope="module")
def kueue(cluster, tmp_path_factory):
    """Kueue running for this module; its webhooks are removed at the end (without the server
    they would refuse every Job of later tests)."""
    from hack.localcluster.kueue import Kueue

    k = Kueue(
        binary=REPO / ".capstan" / "bin" / "kueue",
        kubeconfig=cluster.kubeconfig,
        pki_dir=cluster.cluster.root / "pki",
        work_dir=tmp_path_factory.mktemp("kueue"),
        env=cluster.cluster.marker,
        wait_for_pods_ready_s=WAIT_FOR_PODS_READY_S,
    )
    try:
        k.start()
        cluster.apply(
            json.dumps(
                {
                    "apiVersion": "kueue.x-k8s.io/v1beta2",
                    "kind": "ResourceFlavor",
                    "metadata": {"name": FLAVOR},
                }
            )
        )
        yield k
    finally:
        k.stop()
        print(f"kueue log: {k.work_dir / 'kueue.log'}")


@pytest.fixture
def local_queue(kueue, operator_cluster, namespace):
    """A ClusterQueue (preempting lower priorities within it) with 8 GPUs of quota and a
    LocalQueue of the same name in the test's namespace; returns the name. At the end the
    namespace's Jobs are deleted and their pods waited for: the next test needs the GPUs."""
    name = f"q-{namespace}"
    cq = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "preemption": {"withinClusterQueue": "LowerPriority"},
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                    "flavors": [
                        {
                            "name": FLAVOR,
                            "resources": [
                                {"name": "cpu", "nominalQuota": "32"},
                                {"name": "memory", "nominalQuota": "128Gi"},
                                {"name": "nvidia.com/gpu", "nominalQuota": str(GPUS)},
                            ],
                        }
                    ],
                }
            ],
        },
    }
    lq = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {"name": name},
        "spec": {"clusterQueue": name},
    }
    operator_cluster.apply(json.dumps(cq))
    operator_cluster.apply(json.dumps(lq), namespace)
    yield name
    operator_cluster.kubectl("delete", "jobs", "--all", "-n", namespace, "--wait=false", check=False)
    operator_cluster.wait_for(
        f"the pods of namespace {namespace} to be gone (they hold the nodes' GPUs)",
        lambda: not operator_cluster.list("pods", namespace),
        timeout=120,
    )
    operator_cluster.kubectl("delete", "clusterqueue", name, "--wait=false", check=False)


def kueue_run(queue: str, **scheduling) -> dict:
    """The spec fields of a TrainingRun of 2 pods x 4 GPUs (the whole quota) queued in `queue`."""
    return {
        "nodes": 2,
        "resources": {"minNodes": 2, "maxNodes": 2, "nprocPerNode": 1, "gpusPerNode": 4},
        "scheduling": {"scheduler": "kueue", "queueName": queue, **scheduling},
    }


def workload(cluster, namespace: str, job: dict) -> dict | None:
    """Kueue's Workload for `job` (labelled with its uid)."""
    r = cluster.kubectl(
        "get",
        "workloads.kueue.x-k8s.io",
        "-n",
        namespace,
        "-l",
        f"kueue.x-k8s.io/job-uid={job['metadata']['uid']}",
        "-o",
        "json",
    )
    items = json.loads(r.stdout)["items"]
    return items[-1] if items else None


def condition(obj: dict | None, type_: str) -> dict:
    return next(
        (c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), {}
    )
