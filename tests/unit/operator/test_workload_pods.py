"""What every workload pod shares (children.py): object-storage credentials from the resource's
own namespace, the ServiceAccount, and placement."""

from __future__ import annotations

from capstan_api.dataset import DatasetSpec
from capstan_api.evaluation import EvaluationSpec
from capstan_api.preparation import plan
from capstan_operator import children
from capstan_operator.config import OperatorConfig
from capstan_operator.dataset import build as dataset_build
from capstan_operator.evaluation import build as evaluation_build
from tests.unit.operator.resources import dataset, evaluation


def secret_refs(env: list[dict]) -> dict[str, dict]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}


def test_no_secret_anywhere_leaves_the_default_aws_chain():
    env = children.workload_env(dataset("d"), OperatorConfig())
    assert secret_refs(env) == {}
    assert not any(e["name"].startswith("AWS_") for e in env)


def test_the_operators_default_secret_is_optional_in_each_namespace():
    refs = secret_refs(children.workload_env(dataset("d"), OperatorConfig(s3_secret="s3")))
    assert set(refs) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"}
    assert all(r["name"] == "s3" and r["optional"] for r in refs.values())


def test_a_resources_own_secret_wins_and_must_exist():
    body = dataset("d", storage={"secretName": "team-creds"})
    refs = secret_refs(children.workload_env(body, OperatorConfig(s3_secret="s3")))
    assert {k: (r["name"], r["optional"]) for k, r in refs.items()} == {
        "AWS_ACCESS_KEY_ID": ("team-creds", False),
        "AWS_SECRET_ACCESS_KEY": ("team-creds", False),
        "AWS_SESSION_TOKEN": ("team-creds", True),
        "AWS_REGION": ("team-creds", True),
    }


def test_dataset_and_evaluation_pods_run_as_the_workload_service_account_and_are_placed():
    cfg = OperatorConfig(workload_service_account="capstan-workload")
    placed = {
        "resources": {
            "gpus": 1,
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        }
    }
    body = dataset("d", **placed)
    spec = DatasetSpec.model_validate(body["spec"])
    job = dataset_build.build_stage_job(body, spec, cfg, plan(spec)[0])
    ebody = evaluation("e", serviceAccountName="evaluator", **placed)
    [ejob] = [
        c
        for c in evaluation_build.build(ebody, EvaluationSpec.model_validate(ebody["spec"]), cfg)
        if c["kind"] == "Job"
    ]
    for j, account in ((job, "capstan-workload"), (ejob, "evaluator")):
        pod = j["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account
        assert pod["nodeSelector"] == {"pool": "gpu"}
        assert pod["tolerations"] == [
            {"operator": "Exists", "key": "spot", "effect": "NoSchedule"},
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        ]
        assert pod["affinity"] == {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_operators_placement_defaults_apply_where_a_resource_sets_none():
    cfg = OperatorConfig(
        workload_placement={
            "nodeSelector": {"pool": "ml"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {}},
        },
        s3_region="eu-west-1",
        s3_secret="s3",
    )
    body = dataset("d")
    spec = DatasetSpec.model_validate(body["spec"])
    pod = dataset_build.build_stage_job(body, spec, cfg, plan(spec)[0])["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "ml"} and pod["affinity"] == {"nodeAffinity": {}}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ]
    env = pod["containers"][0]["env"]
    assert [e for e in env if e["name"] == "AWS_REGION"] == [{"name": "AWS_REGION", "value": "eu-west-1"}]

    body = dataset("d", resources={"nodeSelector": {"pool": "cpu"}})
    spec = DatasetSpec.model_validate(body["spec"])
    pod = dataset_build.build_stage_job(body, spec, cfg, plan(spec)[0])["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "cpu"}  # the resource's own wins
