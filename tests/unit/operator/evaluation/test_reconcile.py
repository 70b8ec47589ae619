"""The Evaluation reconciler's decisions on an in-memory API (the real Job and workload are in
tests/integration/test_reconcile_evaluation.py)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from capstan_operator import objectstore
from capstan_operator.config import OperatorConfig
from capstan_operator.evaluation import reconcile as reconcile_evaluation
from tests.unit.operator.fake_kube import FakeKube, write_status
from tests.unit.operator.resources import evaluation

CFG = OperatorConfig()


@pytest.fixture
def fake(monkeypatch) -> FakeKube:
    return FakeKube(monkeypatch)


def reconcile(body: dict):
    """One pass; the status patch is written back as the status subresource would take it."""
    out = reconcile_evaluation.reconcile(body, CFG)
    write_status(body, out.status)
    return out


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def complete_job(fake: FakeKube) -> None:
    fake.objects[("Job", "ev-evaluate")]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}


def test_waits_for_the_dataset_then_creates_the_job(fake):
    body = evaluation("ev", model={"uri": "s3://m"})
    reconcile(body)
    assert body["status"]["phase"] == "Waiting"
    assert body["status"]["message"] == "waiting for Dataset stories (not found)"
    fake.custom[("datasets", "stories")] = {
        "status": {"phase": "Ready", "manifestUri": "s3://d/manifest.json"}
    }
    out = reconcile(body)
    assert body["status"]["phase"] == "Running" and ("Job", "ev-evaluate") in fake.objects
    assert not [c for c in body["status"]["conditions"] if c["type"] == "Waiting"]
    assert [e[1] for e in out.events] == ["Created", "Evaluating"]


def test_a_complete_job_without_status_json_fails_clearly(fake, tmp_path, monkeypatch):
    body = evaluation("ev", model={"uri": "s3://m"}, datasetRef=None, outputUri=f"file://{tmp_path}/out")
    reconcile(body)
    complete_job(fake)
    reconcile(body)
    assert body["status"]["phase"] == "Failed"
    assert (
        body["status"]["message"]
        == f"Job ev-evaluate completed but file://{tmp_path}/out/status.json is missing"
    )


def test_results_and_gate_verdicts_from_status_json(fake, tmp_path):
    out_uri = f"file://{tmp_path}/out"
    body = evaluation("ev", model={"uri": "s3://m"}, datasetRef=None, outputUri=out_uri)
    reconcile(body)
    complete_job(fake)
    doc = {
        "metrics": {"perplexity.token_perplexity": 80.0},
        "gates": [{"metric": "perplexity.token_perplexity", "value": 80.0, "max": 50, "passed": False}],
        "passed": False,
    }
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "status.json").write_text(json.dumps(doc))
    assert objectstore.read_json(f"{out_uri}/status.json", CFG) == doc
    out = reconcile(body)
    st = body["status"]
    assert (st["phase"], st["passed"], st["modelUri"]) == ("Succeeded", False, "s3://m")
    assert st["message"] == "failed gate(s): perplexity.token_perplexity = 80.0 (needs <= 50)"
    passed = next(c for c in st["conditions"] if c["type"] == "Passed")
    assert (passed["status"], passed["reason"]) == ("False", "GatesFailed")
    assert ("Warning", "GatesFailed") in [e[:2] for e in out.events]
    assert reconcile(body).status == {}  # finished: nothing more to write


def test_a_step_is_evaluated_once_committed_while_its_run_still_trains(fake, tmp_path):
    cfg = dataclasses.replace(CFG, allowed_uri_schemes=("file",))
    root = f"file://{tmp_path}/ckpt"
    model = {"trainingRunRef": {"name": "tiny"}, "step": 4}
    body = evaluation("ev", model=model, datasetRef=None, validationUri="s3://v")
    run = {"status": {"phase": "Running", "step": 3, "totalSteps": 8, "outputUri": root}}
    fake.custom[("trainingruns", "tiny")] = run
    write_status(body, reconcile_evaluation.reconcile(body, cfg).status)
    assert body["status"]["phase"] == "Waiting"
    assert body["status"]["message"] == (
        "waiting for TrainingRun tiny to commit its checkpoint of step 4 (now Running at step 3)"
    )
    # The run is past step 4 and its folder is committed: the Job evaluates it, the run still going.
    folder = tmp_path / "ckpt" / "step-00000004"
    folder.mkdir(parents=True)
    (folder / "COMMITTED").write_text("4\n")
    run["status"] |= {"step": 6, "lastCheckpoint": {"uri": f"{root}/step-00000006", "step": 6}}
    write_status(body, reconcile_evaluation.reconcile(body, cfg).status)
    assert (body["status"]["phase"], body["status"]["modelUri"]) == ("Running", f"{root}/step-00000004")
    doc = yaml.safe_load(fake.objects[("ConfigMap", "ev-evaluate")]["data"]["resource.yaml"])
    assert doc["spec"]["model"] == {"uri": f"{root}/step-00000004", "tokenizerUri": ""}


def test_a_step_the_run_went_past_without_committing_fails(fake, tmp_path):
    cfg = dataclasses.replace(CFG, allowed_uri_schemes=("file",))
    root = f"file://{tmp_path}/ckpt"
    body = evaluation("ev", model={"trainingRunRef": {"name": "tiny"}, "step": 3}, datasetRef=None)
    last = {"uri": f"{root}/step-00000004", "step": 4}
    status = {"phase": "Running", "step": 5, "totalSteps": 8, "outputUri": root, "lastCheckpoint": last}
    fake.custom[("trainingruns", "tiny")] = {"status": status}
    write_status(body, reconcile_evaluation.reconcile(body, cfg).status)
    assert body["status"]["phase"] == "Failed"
    assert body["status"]["message"].startswith(
        "spec.model.step: TrainingRun tiny has no checkpoint of step 3 (its last is step 4)"
    )
    assert ("Job", "ev-evaluate") not in fake.objects


def test_a_pod_that_cannot_start_is_named_then_fails_the_evaluation_at_its_start_deadline(fake):
    body = evaluation("ev", model={"uri": "s3://m"}, datasetRef=None, startDeadlineSeconds=120)
    reconcile(body)
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "team-s3" not found'}
    fake.add(
        {
            "kind": "Pod",
            "metadata": {"name": "ev-evaluate-0-x", "labels": {"job-name": "ev-evaluate"}},
            "status": {
                "containerStatuses": [{"name": "evaluate", "image": "t:1", "state": {"waiting": waiting}}]
            },
        }
    )
    job = fake.objects[("Job", "ev-evaluate")]
    job["metadata"]["creationTimestamp"] = ago(60)
    reconcile(body)
    assert body["status"]["phase"] == "Pending" and ("Job", "ev-evaluate") in fake.objects
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "CreateContainerConfigError"
    assert 'secret "team-s3" not found' in ready["message"]

    job["metadata"]["creationTimestamp"] = ago(121)
    reconcile(body)
    assert fake.calls[-1] == ("delete", "Job", "ev-evaluate", "Foreground")
    failed = next(c for c in body["status"]["conditions"] if c["type"] == "Failed")
    assert body["status"]["phase"] == "Failed" and failed["reason"] == "CreateContainerConfigError"
    assert failed["message"] == (
        "pod did not start within startDeadlineSeconds (120 s): pod ev-evaluate-0-x container evaluate "
        '(image t:1) cannot start: CreateContainerConfigError: secret "team-s3" not found'
    )


def _status_json(tmp_path, passed: bool) -> None:
    gate = {"metric": "perplexity.token_perplexity", "value": 40.0 if passed else 80.0, "max": 50}
    doc = {"metrics": {"perplexity.token_perplexity": gate["value"]}, "gates": [gate | {"passed": passed}]}
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "status.json").write_text(json.dumps(doc | {"passed": passed}))


def test_a_scheduled_evaluation_reevaluates_what_the_deployment_serves(fake, tmp_path):
    """The served model is evaluated, then again at each schedule time, each run in history; the
    previous run's Job is never read as the next one's."""
    fake.custom[("deployments", "chat")] = {"status": {"revision": 1, "modelUri": "s3://m/step-00000010"}}
    body = evaluation(
        "ev",
        model={"deploymentRef": {"name": "chat"}},
        datasetRef=None,
        outputUri=f"file://{tmp_path}/out",
        schedule="*/5 * * * *",
    )
    reconcile(body)
    assert body["status"]["modelUri"] == "s3://m/step-00000010"
    # The workload's file: the served model as a URI; the schedule is the operator's business.
    doc = yaml.safe_load(fake.objects[("ConfigMap", "ev-evaluate")]["data"]["resource.yaml"])
    assert doc["spec"]["model"]["uri"] == "s3://m/step-00000010" and "schedule" not in doc["spec"]
    complete_job(fake)
    _status_json(tmp_path, passed=True)
    reconcile(body)
    st = body["status"]
    assert st["phase"] == "Succeeded" and [h["passed"] for h in st["history"]] == [True]
    # Not due yet: requeued for the next schedule time, nothing started.
    out = reconcile(body)
    assert 0 < out.requeue_after <= 300 and ("Job", "ev-evaluate") in fake.objects
    assert body["status"]["nextScheduleTime"] > st["startTime"]
    # Due (the first run started 6 minutes ago): a new run of the model served now.
    body["status"]["startTime"] = ago(6 * 60)
    fake.custom[("deployments", "chat")]["status"]["modelUri"] = "s3://m/step-00000020"
    out = reconcile(body)
    assert body["status"]["phase"] == "Pending" and body["status"]["lastScheduleTime"]
    assert ("Job", "ev-evaluate") not in fake.objects and out.requeue_after == 1.0
    reconcile(body)
    job = fake.objects[("Job", "ev-evaluate")]
    assert job["metadata"]["annotations"]["capstan.dev/scheduled-for"] == body["status"]["lastScheduleTime"]
    assert body["status"]["phase"] == "Running" and body["status"]["modelUri"] == "s3://m/step-00000020"
    complete_job(fake)
    _status_json(tmp_path, passed=False)
    reconcile(body)
    hist = body["status"]["history"]
    assert [(h["modelUri"], h["passed"], h["failedGates"]) for h in hist] == [
        ("s3://m/step-00000010", True, []),
        ("s3://m/step-00000020", False, ["perplexity.token_perplexity"]),
    ]
    assert hist[1]["scheduled"] == body["status"]["lastScheduleTime"]


def test_history_keeps_the_last_ten_runs():
    from capstan_operator.evaluation import schedule

    history: list[dict] = []
    for i in range(12):
        history = schedule.add_run(history, {"passed": True, "gates": []}, f"s3://m/{i}", "", f"t{i}")
    assert [h["modelUri"] for h in history] == [f"s3://m/{i}" for i in range(2, 12)]


def test_missed_runs_are_not_made_up_one_by_one():
    from capstan_operator.evaluation import schedule

    base = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    now = datetime(2026, 12, 6, 5, 50, tzinfo=UTC)
    due = schedule.due("0 * * * *", base, now)
    assert due.run_at == datetime(2026, 12, 6, 5, 0, tzinfo=UTC)
    assert due.next_at == datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
    assert schedule.due("0 * * * *", due.run_at, now).run_at is None


def test_a_job_being_deleted_is_waited_for_not_read(fake, tmp_path):
    body = evaluation("ev", model={"uri": "s3://m"}, datasetRef=None, outputUri=f"file://{tmp_path}/out")
    reconcile(body)
    complete_job(fake)
    fake.objects[("Job", "ev-evaluate")]["metadata"]["deletionTimestamp"] = ago(1)
    out = reconcile(body)
    assert out.requeue_after == 1.0 and body["status"]["phase"] == "Running"


def test_the_training_summary_reaches_status_when_the_workload_wrote_one():
    doc = {"metrics": {}, "gates": [], "passed": True}
    summary = "s3://o/training-summary.md"
    out = reconcile_evaluation.status_from_file(doc | {"trainingSummaryUri": summary}, "s3://o")
    assert out["trainingSummaryUri"] == summary
    assert "trainingSummaryUri" not in reconcile_evaluation.status_from_file(doc, "s3://o")  # older image
