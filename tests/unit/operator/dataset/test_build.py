"""Dataset children: plain dict assertions on the ConfigMap and the stage Jobs."""

from __future__ import annotations

import yaml

from capstan_api.dataset import DatasetSpec
from capstan_api.preparation import STAGES, plan
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


def spec_of(body) -> DatasetSpec:
    return DatasetSpec.model_validate(body["spec"])


def stage_job(body, stage: str = "map", cfg: OperatorConfig = CFG) -> dict:
    spec = spec_of(body)
    (s,) = [s for s in plan(spec) if s.name == stage]
    return build_dataset.build_stage_job(body, spec, cfg, s)


def test_configmap_holds_the_resource_as_the_workload_file():
    body = dataset("stories")
    cm = build_dataset.build_config_map(body, spec_of(body), 3)
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
    # Each preparation writes its own revision's folder; the number is on the ConfigMap.
    assert doc["spec"]["output"]["uri"] == "s3://bucket/out/revisions/3"
    assert build_dataset.revision_of(cm) == 3
    assert doc["spec"]["sources"][0]["licence"] == "CC0-1.0"
    assert doc["spec"]["workers"] == 1
    assert "status" not in doc
    # The file validates with the same model the workload uses.
    DatasetSpec.model_validate(doc["spec"])


def test_stage_job_is_indexed_with_one_pod_per_worker_and_retries_per_index():
    body = dataset("stories", workers=3)
    job = stage_job(body, "tokenize")
    assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == (
        "batch/v1",
        "Job",
        "stories-prepare-tokenize",
    )
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "prepare"
    spec = job["spec"]
    assert {k: v for k, v in spec.items() if k not in ("template", "podFailurePolicy")} == {
        "completionMode": "Indexed",
        "completions": 3,
        "parallelism": 3,
        "backoffLimitPerIndex": 2,
        "maxFailedIndexes": 0,
    }, "backoffLimit stays unset: the API server makes it MaxInt32 beside backoffLimitPerIndex"
    assert spec["podFailurePolicy"]["rules"] == [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "prepare", "operator": "In", "values": [3]},
        }
    ]
    (c,) = spec["template"]["spec"]["containers"]
    assert c["command"] == [
        "python",
        "-m",
        "capstan_trainer.prepare",
        "-f",
        "/etc/capstan/resource.yaml",
        "--stage",
        "tokenize",
        "--workers",
        "3",
    ]


def test_stage_jobs_take_the_plans_worker_counts():
    body = dataset("stories", workers=40)
    spec = spec_of(body)
    counts = {
        s.name: build_dataset.build_stage_job(body, spec, CFG, s)["spec"]["completions"] for s in plan(spec)
    }
    # dedup: 14 LSH bands + 1 exact task (the defaults) < 40 workers; cluster and finish: one.
    assert counts == {"map": 40, "dedup": 15, "cluster": 1, "tokenize": 40, "shard": 40, "finish": 1}
    # Every stage says the spec's worker count: the layout of _work/ depends on it.
    for s in plan(spec):
        pod = build_dataset.build_stage_job(body, spec, CFG, s)["spec"]["template"]["spec"]
        assert pod["containers"][0]["command"][-2:] == ["--workers", "40"], s.name


def test_stage_job_runs_prepare_with_storage_and_policy_env():
    job = stage_job(dataset("stories"))
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["volumes"] == [
        {"name": "capstan-resource", "configMap": {"name": "stories-prepare"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    (c,) = pod["containers"]
    assert c["image"] == "registry.example/capstan:1"
    assert c["volumeMounts"] == [
        {"name": "capstan-resource", "mountPath": "/etc/capstan", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ENDPOINT_URL"] == {"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"}
    # the operator's default Secret name: used where the namespace has it, else the default chain
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID", "optional": True}
    }
    assert env["AWS_REGION"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env["CAPSTAN_ALLOWED_LICENCES"]["value"] == "CC0-1.0,MIT"
    assert "JOB_COMPLETION_INDEX" not in env, "the Job controller sets the index"
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["capstan.dev/kind"] == "dataset"
    assert labels["capstan.dev/owner"] == "stories"
    assert labels["app.kubernetes.io/component"] == "prepare"


def test_stage_job_requests_the_specs_resources_and_placement():
    default = stage_job(dataset("stories"))["spec"]["template"]["spec"]
    assert default["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "3Gi"},
        "limits": {"memory": "3Gi"},
    }
    assert "nodeSelector" not in default and "tolerations" not in default
    body = dataset(
        "stories",
        resources={"cpu": "4", "memory": "16Gi", "gpus": 1, "nodeSelector": {"pool": "prep"}},
    )
    pod = stage_job(body, "tokenize")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 1},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": 1},
    }
    assert pod["nodeSelector"] == {"pool": "prep"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_no_secret_or_endpoint_means_no_storage_env():
    job = stage_job(dataset("stories"), cfg=OperatorConfig())
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not names & {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_long_names_are_shortened_deterministically():
    long = "d" * 63
    for stage in STAGES:
        a, b = build_dataset.stage_job_name(long, stage), build_dataset.stage_job_name(long, stage)
        # An Indexed Job's pods are `<job>-<index>-<5 chars>`: 52 + 5 + 6 = 63, a DNS label.
        assert a == b and len(a) <= 52 and a.endswith(f"-prepare-{stage}")
        assert build_dataset.stage_job_name("d" * 62, stage) != a
    assert len({build_dataset.stage_job_name(long, s) for s in STAGES}) == len(STAGES)
    assert build_dataset.config_map_name(long).endswith("-prepare")


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


def test_a_field_at_its_default_does_not_change_what_a_revision_is_made_from():
    # What an API server defaulting a newer CRD's field does to a stored spec: no new revision
    # on an operator upgrade. The same field set to something else is a new revision.
    plain = dataset("d")
    defaulted = dataset("d")
    defaulted["spec"]["augmentation"] = {"counterfactual": {"fraction": 0}}
    changed = dataset("d")
    changed["spec"]["augmentation"] = {"counterfactual": {"fraction": 0.5}}
    assert build_dataset.spec_hash(plain) == build_dataset.spec_hash(defaulted)
    assert build_dataset.spec_hash(plain) != build_dataset.spec_hash(changed)
