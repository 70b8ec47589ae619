"""Pod Security admission for real, and pods that cannot start named in the owning resource's
status: the API server's built-in PodSecurity admission enforces "restricted" where a namespace
asks for it; the operator's pods meet it, and a Dataset whose pods are refused, or whose image
cannot be pulled or run, says so in its status within a minute instead of "Running"."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from capstan_operator.dataset import reconcile
from tests.support.driver import Driver
from tests.support.operator_env import dataset_yaml, op_cfg, operator_cluster, upload_corpus

pytestmark = pytest.mark.cluster
__all__ = ["op_cfg", "operator_cluster"]  # fixtures

RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
PUSHED = Path(__file__).resolve().parents[2] / ".capstan" / "images" / "pushed.json"


@pytest.fixture
def restricted(operator_cluster, namespace) -> str:
    operator_cluster.kubectl("label", "namespace", namespace, RESTRICTED)
    return namespace


def test_a_pod_that_breaks_restricted_is_refused_by_the_api_server(operator_cluster, restricted):
    r = operator_cluster.kubectl(
        "run",
        "loose",
        "-n",
        restricted,
        "--image=capstan/trainer:0.1.0",
        "--restart=Never",
        "--",
        "true",
        check=False,
    )
    assert r.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in r.stderr
    assert "runAsNonRoot != true" in r.stderr and "seccompProfile" in r.stderr


def _blocked_dataset(operator_cluster, namespace, s3_bucket, cfg) -> dict:
    source = upload_corpus(s3_bucket)
    operator_cluster.apply(dataset_yaml("blocked", source, f"{s3_bucket}/out/blocked"), namespace)
    driver = Driver(namespace, cfg).add("datasets", "blocked", reconcile.reconcile)
    driver.run_until(
        "Dataset blocked to say why its pod cannot start",
        lambda: (
            (driver.condition("datasets", "blocked", "Ready") or {}).get("reason") not in (None, "Preparing")
        ),
        timeout=60,
    )
    return driver.get("datasets", "blocked")["status"]


def test_pods_refused_by_admission_are_named_in_the_dataset_status(
    operator_cluster, restricted, op_cfg, s3_bucket
):
    # Workloads as root break "restricted": the Job controller cannot create the pod.
    status = _blocked_dataset(
        operator_cluster, restricted, s3_bucket, dataclasses.replace(op_cfg, run_as_user=0)
    )
    assert status["phase"] == "Pending", status
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "FailedCreate"
    assert (
        "blocked-prepare" in ready["message"]
        and 'violates PodSecurity "restricted:latest"' in ready["message"]
    )


def test_the_operators_own_pods_run_under_restricted(operator_cluster, restricted, op_cfg, s3_bucket):
    source = upload_corpus(s3_bucket)
    operator_cluster.apply(dataset_yaml("fine", source, f"{s3_bucket}/out/fine"), restricted)
    driver = Driver(restricted, op_cfg).add("datasets", "fine", reconcile.reconcile)
    driver.run_until(
        "Dataset fine to finish", lambda: driver.phase("datasets", "fine") in ("Ready", "Failed"), timeout=240
    )
    assert driver.phase("datasets", "fine") == "Ready", driver.get("datasets", "fine")["status"]


@pytest.mark.parametrize("case", ["missing-image", "missing-tag", "no-entrypoint"])
def test_an_image_that_cannot_run_is_named_in_the_dataset_status(
    operator_cluster, namespace, op_cfg, s3_bucket, case
):
    base = json.loads(PUSHED.read_text())["base"]["tag"]
    image, reason = {
        "missing-image": ("capstan/no-such-image:1", {"ErrImagePull", "ImagePullBackOff"}),
        "missing-tag": ("capstan/trainer:no-such-tag", {"ErrImagePull", "ImagePullBackOff"}),
        # The base image has python3 but no `python`, the command every workload pod names.
        "no-entrypoint": (f"capstan/base:{base}", {"StartError"}),
    }[case]
    status = _blocked_dataset(
        operator_cluster, namespace, s3_bucket, dataclasses.replace(op_cfg, workload_image=image)
    )
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] in reason, ready
    assert image in ready["message"] and status["phase"] == "Pending"
