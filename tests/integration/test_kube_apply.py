"""kube.apply on the real API server: server-side apply with the operator's field manager, so a
field dropped from the desired object is dropped from the live one, and a field someone else
changed is put back."""

from __future__ import annotations

import pytest

from capstan_operator import kube
from tests.support.operator_env import operator_cluster

pytestmark = pytest.mark.cluster
__all__ = ["operator_cluster"]  # fixture


def config_map(namespace: str, data: dict, labels: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "applied", "namespace": namespace, "labels": labels},
        "data": data,
    }


def test_a_field_removed_from_the_desired_object_leaves_the_live_one(operator_cluster, namespace):
    kube.apply(config_map(namespace, {"a": "1", "b": "2"}, {"keep": "x", "drop": "y"}))
    live = kube.apply(config_map(namespace, {"a": "1"}, {"keep": "x"}))
    assert live["data"] == {"a": "1"} and live["metadata"]["labels"] == {"keep": "x"}
    managers = {m["manager"]: m["operation"] for m in live["metadata"]["managedFields"]}
    assert managers == {kube.FIELD_MANAGER: "Apply"}

    # Someone edits a field the operator owns: the next apply restores it (force).
    operator_cluster.kubectl(
        "patch", "configmap", "applied", "-n", namespace, "--type=merge", "-p", '{"data":{"a":"edited"}}'
    )
    live = kube.apply(config_map(namespace, {"a": "1"}, {"keep": "x"}))
    assert live["data"] == {"a": "1"}
    assert kube.get("v1", "ConfigMap", namespace, "applied")["data"] == {"a": "1"}
