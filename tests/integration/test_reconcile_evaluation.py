"""Evaluation reconciled on the real API server with the real `capstan_trainer.evaluate` Job run by
the node agent on a tiny trained model; a failed gate blocks a Deployment that names it; an
Evaluation with baselineRef waits for its base and compares against it.

The TrainingRun and Dataset it depends on are real objects whose status the test writes (their
own reconcilers are tested elsewhere), so each dependency state is reached on purpose."""

from __future__ import annotations

import json

import pytest
import yaml
from kubernetes import client

from capstan_api.common import GROUP, VERSION
from capstan_operator import kube
from capstan_operator.deployment import reconcile as reconcile_deployment
from capstan_operator.evaluation import reconcile as reconcile_evaluation
from capstan_trainer import storage
from tests.support.operator_env import driver, op_cfg, operator_cluster
from tests.unit.operator import resources

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures


def evaluation_yaml(name: str, out: str, gates: list[dict], **spec) -> str:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Evaluation",
        "metadata": {"name": name},
        "spec": {
            "contextLength": 64,
            "batchSize": 8,
            "maxValidationDocuments": 8,
            "biasProbes": {"builtin": False},
            "gates": gates,
            "outputUri": out,
            "resources": {"cpu": "500m", "memory": "1Gi"},
            **spec,
        },
    }
    return yaml.safe_dump(body)


def apply_with_status(cluster, namespace: str, body: dict, plural: str, status: dict) -> None:
    """Create a dependency as a user would, then set its status as its own reconciler would."""
    body = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {"name": body["metadata"]["name"]},
        "spec": body["spec"],
    }
    cluster.apply(yaml.safe_dump(body), namespace)
    set_status(namespace, plural, body["metadata"]["name"], status)


def set_status(namespace: str, plural: str, name: str, status: dict) -> None:
    client.CustomObjectsApi(kube.api_client()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, plural, name, {"status": status}
    )


def status(driver, plural: str, name: str) -> dict:
    return (driver.get(plural, name) or {}).get("status") or {}


def test_waits_for_its_training_run_then_passes_its_gates(
    operator_cluster, namespace, driver, tiny, s3_bucket
):
    cluster = operator_cluster
    apply_with_status(cluster, namespace, resources.trainingrun("tiny"), "trainingruns", {"phase": "Running"})
    data = resources.dataset("counting")
    apply_with_status(
        cluster,
        namespace,
        data,
        "datasets",
        {"phase": "Ready", "manifestUri": f"{tiny.dataset_uri}/manifest.json"},
    )
    gates = [
        {"metric": "perplexity.token_perplexity", "max": 1000},
        {"metric": "perplexity.documents", "min": 1},
    ]
    spec = {"model": {"trainingRunRef": {"name": "tiny"}}, "datasetRef": {"name": "counting"}}
    cluster.apply(evaluation_yaml("ev", f"{s3_bucket}/ev", gates, **spec), namespace)
    driver.add("evaluations", "ev", reconcile_evaluation.reconcile)
    driver.run_until(
        "Evaluation ev to wait", lambda: status(driver, "evaluations", "ev").get("phase") == "Waiting", 30
    )
    waiting = driver.condition("evaluations", "ev", "Waiting")
    assert waiting["message"] == "waiting for TrainingRun tiny to succeed (now Running)"
    assert cluster.get("job", "ev-evaluate", namespace) is None

    set_status(
        namespace,
        "trainingruns",
        "tiny",
        {"phase": "Succeeded", "lastCheckpoint": {"uri": tiny.checkpoint_uri, "step": 100}},
    )
    driver.run_until(
        "Evaluation ev to finish",
        lambda: status(driver, "evaluations", "ev").get("phase") in ("Succeeded", "Failed"),
        300,
    )
    st = status(driver, "evaluations", "ev")
    assert st["phase"] == "Succeeded", st
    assert st["passed"] is True and st["modelUri"] == tiny.checkpoint_uri
    assert 1 < st["metrics"]["perplexity.token_perplexity"] < 1000
    assert st["metrics"]["perplexity.documents"] == 8
    assert [(g["metric"], g["passed"]) for g in st["gates"]] == [
        ("perplexity.token_perplexity", True),
        ("perplexity.documents", True),
    ]
    assert st["resultsUri"] == f"{s3_bucket}/ev/results.json"
    assert st["modelCardUri"] == f"{s3_bucket}/ev/README.md"
    assert storage.read_bytes(f"{s3_bucket}/ev/README.md").startswith(b"---")
    assert driver.condition("evaluations", "ev", "Waiting") is None
    assert driver.condition("evaluations", "ev", "Passed")["status"] == "True"
    # The Job ran the resolved file: references replaced by URIs.
    doc = yaml.safe_load(cluster.get("configmap", "ev-evaluate", namespace)["data"]["resource.yaml"])
    assert doc["spec"]["model"]["uri"] == tiny.checkpoint_uri
    assert doc["spec"]["validationUri"] == f"{tiny.dataset_uri}/manifest.json"
    # Level-based: another pass changes nothing.
    assert reconcile_evaluation.reconcile(driver.get("evaluations", "ev"), driver.cfg).status == {}

    # A spec change is applied: the model is evaluated again against the new gate.
    patch = {"spec": {"gates": [{"metric": "perplexity.token_perplexity", "max": 1.0}]}}
    cluster.kubectl("patch", "evaluation", "ev", "-n", namespace, "--type=merge", "-p", yaml.safe_dump(patch))
    driver.run_until(
        "Evaluation ev to be evaluated again",
        lambda: (
            status(driver, "evaluations", "ev").get("observedGeneration") == 2
            and status(driver, "evaluations", "ev").get("phase") == "Succeeded"
        ),
        300,
    )
    st = status(driver, "evaluations", "ev")
    assert st["passed"] is False and [g["metric"] for g in st["gates"]] == ["perplexity.token_perplexity"]
    assert "SpecChanged" in [e[2] for e in driver.events]


def test_a_failed_gate_blocks_the_deployment(operator_cluster, namespace, driver, tiny, s3_bucket):
    cluster = operator_cluster
    gates = [{"metric": "perplexity.token_perplexity", "max": 1.0}]  # no model is that sure
    spec = {"model": {"uri": tiny.checkpoint_uri}, "validationUri": tiny.dataset_uri}
    cluster.apply(evaluation_yaml("strict", f"{s3_bucket}/strict", gates, **spec), namespace)
    cluster.apply(
        yaml.safe_dump(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Deployment",
                "metadata": {"name": "chat"},
                "spec": {"model": {"evaluationRef": {"name": "strict"}}, "replicas": 1},
            }
        ),
        namespace,
    )
    driver.add("evaluations", "strict", reconcile_evaluation.reconcile)
    driver.add("deployments", "chat", reconcile_deployment.reconcile)
    driver.run_until(
        "Evaluation strict to finish",
        lambda: status(driver, "evaluations", "strict").get("phase") in ("Succeeded", "Failed"),
        300,
    )
    st = status(driver, "evaluations", "strict")
    assert (st["phase"], st["passed"]) == ("Succeeded", False), st
    (gate,) = st["gates"]
    assert gate["passed"] is False and gate["value"] > 1.0 and gate["max"] == 1.0
    passed = driver.condition("evaluations", "strict", "Passed")
    assert passed["status"] == "False" and "perplexity.token_perplexity" in passed["message"]
    assert ("strict", "Warning", "GatesFailed") in [e[:3] for e in driver.events]

    driver.step()  # the Deployment sees the verdict
    dep = status(driver, "deployments", "chat")
    assert dep["phase"] == "Waiting"
    waiting = driver.condition("deployments", "chat", "Waiting")
    assert waiting["reason"] == "EvaluationNotPassed"
    assert waiting["message"].startswith("Evaluation strict did not pass its gates")
    assert cluster.list("deployments.apps", namespace) == []


def test_a_crashing_evaluation_fails_with_exit_code_and_log(operator_cluster, namespace, driver, s3_bucket):
    cluster = operator_cluster
    missing = f"{s3_bucket}/no-such-model"
    cluster.apply(evaluation_yaml("broken", f"{s3_bucket}/broken", [], model={"uri": missing}), namespace)
    driver.add("evaluations", "broken", reconcile_evaluation.reconcile)
    driver.run_until(
        "Evaluation broken to fail",
        lambda: status(driver, "evaluations", "broken").get("phase") in ("Succeeded", "Failed"),
        240,
    )
    st = status(driver, "evaluations", "broken")
    assert st["phase"] == "Failed", st
    failed = driver.condition("evaluations", "broken", "Failed")
    assert failed["reason"] == "EvaluationFailed"
    assert "container evaluate exited with code" in failed["message"]
    assert "no-such-model" in failed["message"]  # the log tail says what was missing


def test_an_evaluation_applied_with_its_baseline_waits_for_it_then_compares(
    operator_cluster, namespace, driver, tiny, s3_bucket
):
    """`tuned` names `base` in baselineRef, both applied at once: `tuned` waits until `base`
    has succeeded, then its results and model card carry base's figures beside its own."""
    gates = [{"metric": "perplexity.token_perplexity", "max": 1000}]
    spec = {"model": {"uri": tiny.checkpoint_uri}, "validationUri": tiny.dataset_uri}
    tuned = evaluation_yaml("tuned", f"{s3_bucket}/tuned", gates, baselineRef={"name": "base"}, **spec)
    base = evaluation_yaml("base", f"{s3_bucket}/base", gates, **spec)
    operator_cluster.apply(f"{tuned}---\n{base}", namespace)
    driver.add("evaluations", "tuned", reconcile_evaluation.reconcile)
    driver.add("evaluations", "base", reconcile_evaluation.reconcile)
    tuned_phases = []

    def both_done() -> bool:
        tuned_phases.append(status(driver, "evaluations", "tuned").get("phase"))
        done = ("Succeeded", "Failed")
        return all(status(driver, "evaluations", n).get("phase") in done for n in ("base", "tuned"))

    driver.run_until("Evaluations base and tuned to finish", both_done, 600)
    base_st, tuned_st = (status(driver, "evaluations", n) for n in ("base", "tuned"))
    assert base_st["phase"] == "Succeeded", base_st
    assert tuned_st["phase"] == "Succeeded", tuned_st
    assert "Waiting" in tuned_phases, tuned_phases
    waits = [e[3] for e in driver.events if e[0] == "tuned" and e[2] == "Waiting"]
    assert waits and waits[0].startswith("waiting for Evaluation base to succeed (now "), waits
    # The Job ran a plain baselineResultsUri (what workload images without baselineRef read).
    doc = yaml.safe_load(
        operator_cluster.get("configmap", "tuned-evaluate", namespace)["data"]["resource.yaml"]
    )
    assert doc["spec"]["baselineResultsUri"] == base_st["resultsUri"] and "baselineRef" not in doc["spec"]
    results = json.loads(storage.read_bytes(tuned_st["resultsUri"]))
    assert results["baseline"]["uri"] == base_st["resultsUri"]
    assert results["baseline"]["metrics"] == base_st["metrics"]
    card = storage.read_bytes(tuned_st["modelCardUri"]).decode()
    assert "| metric | base | tuned | change |" in card
