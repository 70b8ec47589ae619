"""spec.baselineRef on an in-memory API: an Evaluation compared against another waits for that one
to succeed, fails naming the field when it failed or when it names itself, and then runs with
baselineResultsUri set to the base's results.json, a spec without a baselineRef key (what the
workloads of older images read)."""

from __future__ import annotations

import pytest
import yaml

from capstan_api.evaluation import EvaluationSpec
from capstan_operator.config import OperatorConfig
from capstan_operator.evaluation import reconcile as reconcile_evaluation
from capstan_operator.evaluation import resolve as evaluation_resolve
from tests.unit.operator.fake_kube import FakeKube, write_status
from tests.unit.operator.resources import evaluation

CFG = OperatorConfig()
BASE_DONE = {"status": {"phase": "Succeeded", "resultsUri": "s3://bucket/eval-base/results.json"}}


@pytest.fixture
def fake(monkeypatch) -> FakeKube:
    return FakeKube(monkeypatch)


def tuned(**spec) -> dict:
    return evaluation("tuned", model={"uri": "s3://m"}, datasetRef=None, baselineRef={"name": "base"}, **spec)


def resolve(body: dict, baseline: dict | None):
    spec = EvaluationSpec.model_validate(body["spec"])
    return evaluation_resolve.resolve(
        "team-a", body["metadata"]["name"], spec, None, None, CFG, baseline=baseline
    )


def reconcile(body: dict):
    out = reconcile_evaluation.reconcile(body, CFG)
    write_status(body, out.status)
    return out


def test_waits_for_the_base_evaluation_then_runs_against_its_results(fake: FakeKube):
    body = tuned()
    fake.custom[("evaluations", "base")] = {"status": {"phase": "Running"}}
    reconcile(body)
    assert ("Job", "tuned-evaluate") not in fake.objects
    assert body["status"]["phase"] == "Waiting"
    assert body["status"]["message"] == "waiting for Evaluation base to succeed (now Running)"
    waiting = next(c for c in body["status"]["conditions"] if c["type"] == "Waiting")
    assert (waiting["status"], waiting["reason"]) == ("True", "DependencyNotReady")

    fake.custom[("evaluations", "base")] = BASE_DONE
    reconcile(body)
    assert body["status"]["phase"] == "Running" and ("Job", "tuned-evaluate") in fake.objects
    cm = fake.objects[("ConfigMap", "tuned-evaluate")]
    spec = yaml.safe_load(cm["data"]["resource.yaml"])["spec"]
    assert spec["baselineResultsUri"] == "s3://bucket/eval-base/results.json"
    assert "baselineRef" not in spec, "the workload's spec must not name a field older images reject"
    EvaluationSpec.model_validate(spec)


def test_a_failed_base_evaluation_fails_this_one_naming_the_field(fake: FakeKube):
    body = tuned()
    fake.custom[("evaluations", "base")] = {
        "status": {"phase": "Failed", "message": "pod exited with code 1"}
    }
    reconcile(body)
    assert body["status"]["phase"] == "Failed" and ("Job", "tuned-evaluate") not in fake.objects
    failed = next(c for c in body["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "DependencyFailed"
    assert failed["message"] == "spec.baselineRef: Evaluation base failed: pod exited with code 1"


def test_missing_and_self_references():
    assert resolve(tuned(), None).waiting == "waiting for Evaluation base (not found)"
    itself = evaluation("base", model={"uri": "s3://m"}, datasetRef=None, baselineRef={"name": "base"})
    assert resolve(itself, BASE_DONE).failure == "spec.baselineRef: an Evaluation cannot be its own baseline"


def test_a_base_status_without_results_uri_falls_back_to_its_output_folder():
    base = {"spec": {"outputUri": "s3://bucket/eval-base/"}, "status": {"phase": "Succeeded"}}
    assert resolve(tuned(), base).spec.baseline_results_uri == "s3://bucket/eval-base/results.json"
    nowhere = {"spec": {}, "status": {"phase": "Succeeded"}}
    assert resolve(tuned(), nowhere).failure == "spec.baselineRef: Evaluation base names no results.json"


def test_a_given_baseline_uri_is_kept():
    body = evaluation(
        "ev", model={"uri": "s3://m"}, datasetRef=None, baselineResultsUri="s3://b/results.json"
    )
    assert resolve(body, None).spec.baseline_results_uri == "s3://b/results.json"
