"""Dataset children: plain dict assertions on the ConfigMap and the prepare Job."""

from __future__ import annotations

import yaml

from capstan_api.dataset import DatasetSpec
from capstan_operator.config import OperatorConfig
from capstan_operator.dataset import build as build_dataset
from capstan_operator.dataset.resolve import licence_refusals
from tests.unit.operator.resources import dataset

CFG = OperatorConfig(
    workload_image="registry.example/capstan:1",
    s3_endpoint="http://minio:9000",
    s3_secret="s3-creds",
    allowed_licences=("CC0-1.0", "MIT"),
)


def build(body):
    return build_dataset.build(body, DatasetSpec.model_validate(body["spec"]), CFG)


def test_configmap_holds_the_resource_as_the_workload_file():
    body = dataset("stories")
    cm, _ = build(body)
    assert cm["metadata"]["name"] == "stories-prepare"
    assert cm["metadata"]["namespace"] == "team-a"
    assert cm["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "capstan.dev/v1alpha1",
            "kind": "Dataset",
            "name": "stories",
            "uid": "uid-stories",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    doc = yaml.safe_load(cm["data"]["resource.yaml"])
    assert doc["kind"] == "Dataset"
    assert doc["metadata"] == {"name": "stories", "namespace": "team-a"}
    assert doc["spec"]["output"]["uri"] == "s3://bucket/out"
    assert doc["spec"]["sources"][0]["licence"] == "CC0-1.0"
    assert "status" not in doc
    # The file validates with the same model the workload uses.
    DatasetSpec.model_validate(doc["spec"])


def test_job_runs_prepare_with_storage_and_policy_env():
    _, job = build(dataset("stories"))
    assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == ("batch/v1", "Job", "stories-prepare")
    spec = job["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["podFailurePolicy"]["rules"] == [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "prepare", "operator": "In", "values": [3]},
        }
    ]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["volumes"] == [
        {"name": "capstan-resource", "configMap": {"name": "stories-prepare"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    (c,) = pod["containers"]
    assert c["image"] == "registry.example/capstan:1"
    assert c["command"] == ["python", "-m", "capstan_trainer.prepare", "-f", "/etc/capstan/resource.yaml"]
    assert c["volumeMounts"] == [
        {"name": "capstan-resource", "mountPath": "/etc/capstan", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ENDPOINT_URL"] == {"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID", "optional": False}
    }
    assert env["AWS_REGION"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env["CAPSTAN_ALLOWED_LICENCES"]["value"] == "CC0-1.0,MIT"
    labels = spec["template"]["metadata"]["labels"]
    assert labels["capstan.dev/kind"] == "dataset"
    assert labels["capstan.dev/owner"] == "stories"
    assert labels["app.kubernetes.io/component"] == "prepare"


def test_no_secret_or_endpoint_means_no_storage_env():
    body = dataset("stories")
    _, job = build_dataset.build(body, DatasetSpec.model_validate(body["spec"]), OperatorConfig())
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not names & {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_long_names_are_shortened_deterministically():
    long = "d" * 63
    a, b = build_dataset.job_name(long), build_dataset.job_name(long)
    assert a == b and len(a) <= 52 and a.endswith("-prepare")
    assert build_dataset.job_name("d" * 62) != a


def test_licence_policy_refusals_name_the_field():
    spec = DatasetSpec.model_validate(dataset("x", licence="CC-BY-NC-4.0")["spec"])
    assert licence_refusals(spec, CFG) == [
        "spec.sources[0].licence: CC-BY-NC-4.0 is not allowed by the operator's policy"
    ]
    ok = DatasetSpec.model_validate(dataset("x")["spec"])
    assert licence_refusals(ok, CFG) == []
    narrow = DatasetSpec.model_validate(dataset("x", allowed=["Apache-2.0"])["spec"])
    assert licence_refusals(narrow, CFG) == [
        "spec.allowedLicences: none of Apache-2.0 is allowed by the operator's policy"
    ]
