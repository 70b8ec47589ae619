"""Evaluation children and reference resolution: plain dict assertions."""

from __future__ import annotations

import yaml

from capstan_api.evaluation import EvaluationSpec
from capstan_operator import refs
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


def run_at(phase: str, step: int, last: int | None, total: int = 40, message: str = "") -> dict:
    """A TrainingRun's status as its reconciler writes it: at `step`, newest checkpoint `last`."""
    status = {"phase": phase, "step": step, "totalSteps": total, "outputUri": "s3://bucket/ckpt"}
    if last:
        status["lastCheckpoint"] = {"uri": f"s3://bucket/ckpt/step-{last:08d}", "step": last}
    return {"status": status | ({"message": message} if message else {})}


def at_step(step: int, run: dict | None, committed: bool = False):
    body = evaluation("ev", model={"trainingRunRef": {"name": "tiny"}, "step": step})
    spec = EvaluationSpec.model_validate(body["spec"])
    return evaluation_resolve.resolve("team-a", "ev", spec, run, DATASET_READY, CFG, committed)


def test_a_step_of_a_running_run_is_waited_for_then_evaluated_before_the_run_ends():
    early = run_at("Running", 7, 5)
    assert refs.step_folder(early, 10) == ""  # nothing to read before the run reports step 10
    assert at_step(10, early).waiting == (
        "waiting for TrainingRun tiny to commit its checkpoint of step 10 (now Running at step 7)"
    )
    assert at_step(10, {"status": {"phase": "Pending"}}).waiting.endswith("(now Pending at step 0)")
    later = run_at("Running", 23, 20)
    assert refs.step_folder(later, 10) == "s3://bucket/ckpt/step-00000010"
    r = at_step(10, later, committed=True)
    assert r.spec.model.uri == "s3://bucket/ckpt/step-00000010" and r.spec.model.step is None
    assert "trainingRunRef" not in r.spec.to_wire()["model"]
    # A failed run's committed checkpoint is still a model to evaluate.
    assert at_step(10, run_at("Failed", 23, 20), committed=True).spec.model.uri.endswith("step-00000010")


def test_a_step_that_can_never_come_fails_naming_spec_model_step():
    assert at_step(50, run_at("Running", 3, None)).failure == (
        "spec.model.step: step 50 is past TrainingRun tiny's last step (40)"
    )
    gone = at_step(10, run_at("Running", 31, 30), committed=False).failure
    assert gone.startswith(
        "spec.model.step: TrainingRun tiny has no checkpoint of step 10 (its last is step 30)"
    )
    assert "checkpoint.keepLast" in gone
    early_stop = at_step(30, run_at("EarlyStopped", 25, 25)).failure
    assert early_stop == (
        "spec.model.step: TrainingRun tiny has no checkpoint of step 30: it ended (EarlyStopped) "
        "with its last checkpoint at step 25"
    )
    failed = at_step(30, run_at("Failed", 12, 10, message="pod tiny-train-0 exited with code 1")).failure
    assert failed == (
        "spec.model.step: TrainingRun tiny has no checkpoint of step 30: it failed at step 12: "
        "pod tiny-train-0 exited with code 1"
    )
    assert at_step(10, None).waiting == "waiting for TrainingRun tiny (not found)"


def test_a_step_under_a_checkpoint_root_is_its_step_folder():
    body = evaluation("ev", model={"uri": "s3://bucket/ckpt/", "step": 10}, datasetRef=None)
    assert resolve(body).spec.model.to_wire() == {"uri": "s3://bucket/ckpt/step-00000010", "tokenizerUri": ""}


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
    # a later spec runs again; "" is the first (unscheduled) run
    assert job["metadata"]["annotations"] == {"capstan.dev/generation": "1", "capstan.dev/scheduled-for": ""}
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
