"""Evaluation children and reference resolution: plain dict assertions."""

from __future__ import annotations

import yaml

from capstan_api.evaluation import EvaluationSpec
from capstan_operator.config import OperatorConfig
from capstan_operator.evaluation import build
from capstan_operator.evaluation import resolve as evaluation_resolve
from capstan_operator.evaluation.reconcile import status_from_file
from tests.unit.operator.resources import evaluation

CFG = OperatorConfig(
    workload_image="registry.example/capstan:1",
    s3_endpoint="http://minio:9000",
    s3_secret="s3-creds",
    artifact_uri="s3://artifacts",
)
RUN_DONE = {
    "status": {"phase": "Succeeded", "lastCheckpoint": {"uri": "s3://bucket/ckpt/step-00000020", "step": 20}}
}
DATASET_READY = {"status": {"phase": "Ready", "manifestUri": "s3://bucket/data/manifest.json"}}


def resolve(body, run=None, dataset=None, cfg=CFG):
    spec = EvaluationSpec.model_validate(body["spec"])
    return evaluation_resolve.resolve("team-a", body["metadata"]["name"], spec, run, dataset, cfg)


def test_references_resolve_to_the_checkpoint_and_the_manifest():
    r = resolve(evaluation("ev"), RUN_DONE, DATASET_READY)
    assert (r.waiting, r.failure) == ("", "")
    wire = r.spec.to_wire()
    assert wire["model"]["uri"] == "s3://bucket/ckpt/step-00000020"
    assert "trainingRunRef" not in wire["model"] and "datasetRef" not in wire
    assert wire["validationUri"] == "s3://bucket/data/manifest.json"
    assert wire["outputUri"] == "s3://bucket/eval"


def test_waits_for_a_running_training_run_and_a_missing_dataset():
    r = resolve(evaluation("ev"), {"status": {"phase": "Running"}}, None)
    assert r.spec is None
    assert r.waiting == "waiting for TrainingRun tiny to succeed (now Running), Dataset stories (not found)"


def test_a_failed_training_run_fails_the_evaluation_with_its_reason():
    run = {"status": {"phase": "Failed", "message": "pod tiny-train-0 exited with code 1"}}
    r = resolve(evaluation("ev"), run, DATASET_READY)
    assert (
        r.failure == "spec.model.trainingRunRef: TrainingRun tiny failed: pod tiny-train-0 exited with code 1"
    )


def test_empty_output_uri_goes_under_the_artifact_location_or_fails_clearly():
    body = evaluation("ev", outputUri="", model={"uri": "s3://m"}, datasetRef=None)
    assert resolve(body).spec.output_uri == "s3://artifacts/team-a/ev/evaluation"
    r = resolve(body, cfg=OperatorConfig())
    assert r.spec is None and r.failure.startswith("spec.outputUri: empty")


def test_job_runs_evaluate_on_the_resolved_file():
    body = evaluation("ev", resources={"cpu": "2", "memory": "8Gi", "gpus": 1, "nodeSelector": {"pool": "a"}})
    spec = resolve(body, RUN_DONE, DATASET_READY).spec
    cm, job = build.build(body, spec, CFG)
    assert cm["metadata"]["name"] == job["metadata"]["name"] == "ev-evaluate"
    doc = yaml.safe_load(cm["data"]["resource.yaml"])
    assert doc["kind"] == "Evaluation" and doc["spec"]["model"] == {
        "uri": "s3://bucket/ckpt/step-00000020",
        "tokenizerUri": "",
    }
    EvaluationSpec.model_validate(doc["spec"])  # the workload validates it with the same model
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Evaluation"
    assert job["metadata"]["annotations"] == {"capstan.dev/generation": "1"}  # a later spec runs again
    assert job["spec"]["backoffLimit"] == 1
    rule = job["spec"]["podFailurePolicy"]["rules"][0]
    assert (rule["action"], rule["onExitCodes"]["values"]) == ("FailJob", [3])
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "registry.example/capstan:1"
    assert c["command"] == ["python", "-m", "capstan_trainer.evaluate", "-f", "/etc/capstan/resource.yaml"]
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": 1},
        "limits": {"memory": "8Gi", "nvidia.com/gpu": 1},
    }
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert pod["nodeSelector"] == {"pool": "a"}
    assert pod["volumes"] == [
        {"name": "capstan-resource", "configMap": {"name": "ev-evaluate"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    assert pod["restartPolicy"] == "Never"


def test_image_override_and_status_from_the_workload_file():
    body = evaluation("ev", image="mine:2", model={"uri": "s3://m"}, datasetRef=None)
    _, job = build.build(body, resolve(body).spec, CFG)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "mine:2"
    doc = {
        "metrics": {"perplexity.token_perplexity": 12.5, "bias.by_group": {"a": 1}, "task.x.acc": 1},
        "gates": [{"metric": "perplexity.token_perplexity", "value": 12.5, "max": 50, "passed": True}],
        "passed": True,
        "resultsUri": "s3://bucket/eval/results.json",
    }
    assert status_from_file(doc, "s3://bucket/eval") == {
        "metrics": {"perplexity.token_perplexity": 12.5, "task.x.acc": 1.0},
        "gates": [{"metric": "perplexity.token_perplexity", "value": 12.5, "max": 50, "passed": True}],
        "passed": True,
        "resultsUri": "s3://bucket/eval/results.json",
        "modelCardUri": "s3://bucket/eval/README.md",
    }
