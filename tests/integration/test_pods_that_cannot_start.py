"""Pods that never start fail their resource, naming why, at its start deadline (set short here):
an image that does not exist (a TrainingRun's spec.image: ErrImagePull / ImagePullBackOff), and a
storage Secret missing from the resource's namespace (an Evaluation's and a Dataset's
spec.storage.secretName: CreateContainerConfigError). The node agent reports the kubelet's
waiting reasons; the reconcilers run against the real API server."""

from __future__ import annotations

import pytest
import yaml

from capstan_operator.dataset import reconcile as reconcile_dataset
from capstan_operator.evaluation import reconcile as reconcile_evaluation
from capstan_operator.trainingrun import reconcile as reconcile_trainingrun
from tests.support.operator_env import dataset_yaml, driver, op_cfg, operator_cluster
from tests.support.trainingruns import run_yaml

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures

MISSING_IMAGE = "capstan/no-such-image:1"
MISSING_SECRET = "team-s3"  # op_cfg's Secret is capstan-s3; this one is in no namespace


def failed_condition(driver, plural: str, name: str, timeout: float) -> dict:
    """Drive until the resource fails; its Failed condition."""
    driver.run_until(f"{plural} {name} to fail", lambda: driver.phase(plural, name) == "Failed", timeout)
    return driver.condition(plural, name, "Failed")


def test_a_training_run_whose_image_does_not_exist_fails_at_its_gang_timeout(
    operator_cluster, namespace, driver, s3_bucket
):
    body = run_yaml(
        "noimage",
        f"{s3_bucket}/ckpt/noimage",
        {"uri": f"{s3_bucket}/data"},  # never read: no pod starts
        image=MISSING_IMAGE,
        scheduling={"gangTimeoutSeconds": 10},
    )
    operator_cluster.apply(body, namespace)
    driver.add("trainingruns", "noimage", reconcile_trainingrun.reconcile)
    # Named in status before the deadline, then failed once it has passed.
    named = driver.run_until(
        "the pull failure named in TrainingRun noimage's GangScheduled condition",
        lambda: (
            (c := driver.condition("trainingruns", "noimage", "GangScheduled"))
            and c["reason"] in ("ErrImagePull", "ImagePullBackOff")
            and c
        ),
        timeout=60,
    )
    assert MISSING_IMAGE in named["message"]
    failed = failed_condition(driver, "trainingruns", "noimage", timeout=60)
    assert failed["reason"] in ("ErrImagePull", "ImagePullBackOff"), failed
    assert failed["message"].startswith("pods did not start within gangTimeoutSeconds (10 s): pod noimage-")
    assert MISSING_IMAGE in failed["message"]
    status = driver.get("trainingruns", "noimage")["status"]
    assert status.get("restarts", 0) == 0, status  # not retried: the same image would be pulled
    operator_cluster.wait_for(
        "the gang's Job and pods to go",
        lambda: (
            operator_cluster.get("job", "noimage-train", namespace) is None
            and not operator_cluster.list("pods", namespace, "capstan.dev/owner=noimage")
        ),
        timeout=60,
    )


def evaluation_yaml(name: str, out: str, **spec) -> str:
    body = {
        "apiVersion": "capstan.dev/v1alpha1",
        "kind": "Evaluation",
        "metadata": {"name": name},
        "spec": {"model": {"uri": f"{out}/model"}, "outputUri": out, **spec},
    }
    return yaml.safe_dump(body)


def test_an_evaluation_whose_storage_secret_is_missing_fails_at_its_start_deadline(
    operator_cluster, namespace, driver, s3_bucket
):
    spec = {"storage": {"secretName": MISSING_SECRET}, "startDeadlineSeconds": 10}
    operator_cluster.apply(evaluation_yaml("nosecret", f"{s3_bucket}/ev", **spec), namespace)
    driver.add("evaluations", "nosecret", reconcile_evaluation.reconcile)
    failed = failed_condition(driver, "evaluations", "nosecret", timeout=90)
    assert failed["reason"] == "CreateContainerConfigError", failed
    assert failed["message"].startswith("pod did not start within startDeadlineSeconds (10 s): pod nosecret-")
    assert f'secret "{MISSING_SECRET}" not found' in failed["message"]
    ready = driver.condition("evaluations", "nosecret", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "CreateContainerConfigError")
    operator_cluster.wait_for(
        "the Evaluation's Job to go",
        lambda: operator_cluster.get("job", "nosecret-evaluate", namespace) is None,
        timeout=60,
    )


def test_a_dataset_whose_storage_secret_is_missing_fails_at_its_start_deadline(
    operator_cluster, namespace, driver, s3_bucket
):
    body = yaml.safe_load(dataset_yaml("nosecret", f"{s3_bucket}/raw/*.jsonl", f"{s3_bucket}/out"))
    body["spec"] |= {"storage": {"secretName": MISSING_SECRET}, "startDeadlineSeconds": 10}
    operator_cluster.apply(yaml.safe_dump(body), namespace)
    driver.add("datasets", "nosecret", reconcile_dataset.reconcile)
    failed = failed_condition(driver, "datasets", "nosecret", timeout=90)
    assert failed["reason"] == "CreateContainerConfigError", failed
    assert failed["message"].startswith(
        "stage map: pods did not start within startDeadlineSeconds (10 s): pod nosecret-"
    )
    assert f'secret "{MISSING_SECRET}" not found' in failed["message"]
