"""The operator makes each namespace's workload ServiceAccount on first use when the chart asks
it to (workload.createServiceAccount), annotated as configured (an IRSA role here), and the
gang's pods are admitted and run as it; a resource that names its own ServiceAccount gets none made."""

from __future__ import annotations

import dataclasses

import pytest

from capstan_operator.trainingrun import reconcile as reconcile_trainingrun
from tests.support.operator_env import driver, op_cfg, operator_cluster
from tests.support.trainingruns import run_yaml

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures

ROLE = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/capstan-workload"}


def first_pod(cluster, driver, namespace: str, run: str) -> dict:
    """Drive the run until its gang has a pod; that pod."""
    driver.add("trainingruns", run, reconcile_trainingrun.reconcile)
    return driver.run_until(
        f"a pod of TrainingRun {run}'s gang to be created",
        lambda: next(iter(cluster.list("pods", namespace, f"capstan.dev/owner={run}")), None),
        timeout=60,
    )


def test_the_operator_makes_the_workload_service_account_its_pods_run_as(
    operator_cluster, namespace, driver, s3_bucket
):
    cluster = operator_cluster
    driver.cfg = dataclasses.replace(
        driver.cfg,
        workload_service_account="capstan-workload",
        workload_service_account_create=True,
        workload_service_account_annotations=ROLE,
    )
    assert cluster.get("serviceaccount", "capstan-workload", namespace) is None
    # The data URI holds nothing: what matters here is that the pod is admitted, not the run.
    cluster.apply(run_yaml("sa", f"{s3_bucket}/ckpt/sa", {"uri": f"{s3_bucket}/none"}), namespace)
    pod = first_pod(cluster, driver, namespace, "sa")
    assert pod["spec"]["serviceAccountName"] == "capstan-workload"
    sa = cluster.get("serviceaccount", "capstan-workload", namespace)
    assert sa["metadata"]["annotations"] == ROLE
    assert sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "capstan"

    # A run that names its own ServiceAccount brings it: none is made for it.
    cluster.kubectl("create", "serviceaccount", "mine", "-n", namespace)
    cluster.apply(
        run_yaml("own", f"{s3_bucket}/ckpt/own", {"uri": f"{s3_bucket}/none"}, serviceAccountName="mine"),
        namespace,
    )
    pod = first_pod(cluster, driver, namespace, "own")
    assert pod["spec"]["serviceAccountName"] == "mine"
    names = {s["metadata"]["name"] for s in cluster.list("serviceaccounts", namespace)}
    assert names == {"default", "capstan-workload", "mine"}
