"""A served model keeps being checked (issue 16, item 3), on the real API server with serving and
evaluation pods run by the node agent: live prompts drifting from the training data set the
Deployment's Drift condition; a scheduled Evaluation of what the Deployment serves that fails its
gates sets Degraded and rolls back.

The drift test needs images built from this change (the server's capstan_drift_* metrics); the
scheduled-evaluation test runs with images from before it (the operator does the new part)."""

from __future__ import annotations

import random

import pytest

from capstan_operator.evaluation import reconcile as reconcile_evaluation
from tests.integration.test_reconcile_deployment import (
    become_available,
    change_model,
    deployment_yaml,
    send_traffic,
    serve_driver,
    serving_pods,
    status,
)
from tests.integration.test_reconcile_evaluation import evaluation_yaml
from tests.support import server_proc
from tests.support.operator_env import driver, op_cfg, operator_cluster

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster", "serve_driver"]  # fixtures


def _prompt(pod: dict, text: str) -> None:
    url = f"http://{pod['status']['podIP']}:8000/v1/completions"
    code, body = server_proc.post(url, {"model": "tiny", "prompt": text, "max_tokens": 1})
    assert code == 200, body


def _drift(driver, name: str) -> dict:
    return driver.condition("deployments", name, "Drift") or {}


def test_drifting_prompts_set_the_drift_condition(operator_cluster, namespace, serve_driver, tiny):
    cluster, driver = operator_cluster, serve_driver
    drift = {"enabled": True, "threshold": 1.0, "minPrompts": 20}
    cluster.apply(deployment_yaml("watch", tiny.export_uri, drift=drift), namespace)
    become_available(cluster, driver, namespace, "watch")
    (pod,) = serving_pods(cluster, namespace, "watch")
    for text in tiny.validation_texts:  # in distribution: the validation split itself
        _prompt(pod, text)
    driver.run_until(
        "the Drift condition to judge the 24 in-distribution prompts",
        # at least: the server also counts any prompt sent before (e.g. a warm-up request)
        lambda: ((status(driver, "watch").get("drift") or {}).get("prompts") or 0) >= 24,
        60,
    )
    calm = status(driver, "watch")["drift"]
    assert _drift(driver, "watch")["status"] == "False", calm
    rng = random.Random(0)
    words = [w for t in tiny.validation_texts for w in t.split()]
    for _ in range(48):  # the same words shuffled: lengths and surprisal unlike the training text
        _prompt(pod, " ".join(rng.sample(words, 12)))
    driver.run_until(
        "the Drift condition to be True", lambda: _drift(driver, "watch").get("status") == "True", 60
    )
    drifted = status(driver, "watch")["drift"]
    assert drifted["score"] > 1.0 > calm["score"] and drifted["prompts"] == calm["prompts"] + 48
    assert "PromptsDrifted" in [e[2] for e in driver.events]


def test_a_failing_scheduled_evaluation_degrades_and_rolls_back(
    operator_cluster, namespace, serve_driver, tiny, s3_bucket
):
    cluster, driver = operator_cluster, serve_driver
    cluster.apply(deployment_yaml("chat", tiny.export_uri), namespace)
    become_available(cluster, driver, namespace, "chat")
    change_model(cluster, namespace, "chat", tiny.checkpoint_uri)

    def promoted():
        send_traffic(cluster, namespace, "chat")
        return status(driver, "chat").get("revision") == 2

    driver.run_until("revision 2 (the checkpoint) to be promoted", promoted, 240)
    # Checked every minute; a gate no model meets, so the first run (at once) fails on revision 2.
    gates = [{"metric": "perplexity.token_perplexity", "max": 1.0}]
    spec = {
        "model": {"deploymentRef": {"name": "chat"}},
        "validationUri": f"{tiny.dataset_uri}/manifest.json",
        "schedule": "* * * * *",
        "onRegression": "rollback",
    }
    cluster.apply(evaluation_yaml("check", f"{s3_bucket}/check", gates, **spec), namespace)
    driver.add("evaluations", "check", reconcile_evaluation.reconcile)
    driver.run_until(
        "the Deployment to be Degraded",
        lambda: (driver.condition("deployments", "chat", "Degraded") or {}).get("status") == "True",
        300,
    )
    degraded = driver.condition("deployments", "chat", "Degraded")
    assert f"Evaluation check of {tiny.checkpoint_uri}" in degraded["message"]

    def rolled_back():
        send_traffic(cluster, namespace, "chat")
        return status(driver, "chat").get("modelUri") == tiny.export_uri

    driver.run_until("the Deployment to roll back to the export", rolled_back, 300)
    history = status(driver, "chat")["history"]
    assert [(h["revision"], h["outcome"]) for h in history][:2] == [(1, "Promoted"), (2, "RolledBack")]
    # The schedule runs again, on the model served now.
    driver.run_until(
        "a scheduled run of the served export",
        lambda: any(
            h["modelUri"] == tiny.export_uri and h["scheduled"]
            for h in (driver.get("evaluations", "check") or {}).get("status", {}).get("history", [])
        ),
        240,
    )
