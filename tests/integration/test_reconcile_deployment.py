"""Deployment reconciled on the real API server: serving pods run by the node agent (the real
`capstan_trainer.serve` on a tiny trained model), canary steps analysed from the pods' own
/metrics, promotion and rollback."""

from __future__ import annotations

import contextlib
import dataclasses
import urllib.error

import pytest
import yaml

from capstan_api.common import GROUP, VERSION
from capstan_operator.deployment import reconcile
from tests.support import server_proc
from tests.support.operator_env import driver, op_cfg, operator_cluster
from tests.support.portforward import port_forward

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures
PROMPT = {"prompt": "w5 w6 w7", "max_tokens": 3, "temperature": 0}


@pytest.fixture
def serve_driver(driver):
    # One thread per server process: the machine is small and shared.
    driver.cfg = dataclasses.replace(driver.cfg, extra_env={"OMP_NUM_THREADS": "1"})
    return driver


def deployment_yaml(name: str, uri: str, **spec) -> str:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri, "name": "tiny"},
            "replicas": 1,
            "resources": {"cpu": "500m", "memory": "1Gi"},
            "rollout": {
                "steps": [{"weight": 50, "pauseSeconds": 1}, {"weight": 100, "pauseSeconds": 0}],
                "analysis": {"minRequests": 3, "maxErrorRate": 0.0, "maxP99LatencySeconds": 30},
            },
            **spec,
        },
    }
    return yaml.safe_dump(body)


def serving_pods(cluster, namespace: str, name: str, revision: int | None = None) -> list[dict]:
    sel = f"capstan.dev/owner={name},app.kubernetes.io/component=serve"
    if revision is not None:
        sel += f",capstan.dev/revision={revision}"
    pods = cluster.list("pods", namespace, sel)
    return [
        p
        for p in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]


def complete(pod: dict) -> tuple[int, dict]:
    return server_proc.post(
        f"http://{pod['status']['podIP']}:8000/v1/completions", {"model": "tiny", **PROMPT}
    )


def send_traffic(cluster, namespace: str, name: str) -> None:
    """One completion to every Ready serving pod (what the Service would spread). A pod being
    scaled away may already refuse connections: that is the client's loss, not the test's."""
    for pod in serving_pods(cluster, namespace, name):
        if not pod["metadata"].get("deletionTimestamp"):
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                complete(pod)


def status(driver, name: str) -> dict:
    return (driver.get("deployments", name) or {}).get("status") or {}


def become_available(cluster, driver, namespace: str, name: str) -> dict:
    driver.add("deployments", name, reconcile.reconcile)
    driver.run_until(
        f"Deployment {name} to be Available", lambda: status(driver, name).get("phase") == "Available", 240
    )
    return status(driver, name)


def change_model(cluster, namespace: str, name: str, uri: str) -> None:
    patch = {"spec": {"model": {"uri": uri}}}
    cluster.kubectl(
        "patch", f"deployments.{GROUP}", name, "-n", namespace, "--type=merge", "-p", yaml.safe_dump(patch)
    )


def test_serves_a_completion_then_a_canary_promotes(operator_cluster, namespace, serve_driver, tiny):
    cluster, driver = operator_cluster, serve_driver
    cluster.apply(deployment_yaml("chat", tiny.export_uri), namespace)
    st = become_available(cluster, driver, namespace, "chat")
    assert (st["revision"], st["modelUri"], st["replicas"], st["readyReplicas"]) == (1, tiny.export_uri, 1, 1)
    assert st["url"] == f"http://chat.{namespace}.svc.cluster.local:8000/v1"
    assert st["history"][0]["outcome"] == "Promoted"
    assert cluster.get("service", "chat", namespace)["spec"]["selector"]["capstan.dev/owner"] == "chat"
    # A completion through the serving pod: the tiny model counts upwards.
    (pod,) = serving_pods(cluster, namespace, "chat")
    code, body = complete(pod)
    assert code == 200, body
    assert body["choices"][0]["text"].split()[:1] == ["w8"]
    # The same through `kubectl port-forward` (API server -> node -> the pod's port 8000).
    with port_forward(cluster, namespace, f"pod/{pod['metadata']['name']}", 8000) as local:
        code, body = server_proc.post(f"http://127.0.0.1:{local}/v1/completions", {"model": "tiny", **PROMPT})
    assert code == 200, body
    assert body["choices"][0]["text"].split()[:1] == ["w8"]

    # A new model URI (the same weights, as a DCP checkpoint) becomes revision 2, as a canary.
    change_model(cluster, namespace, "chat", tiny.checkpoint_uri)
    driver.run_until(
        "the canary to start at 50%",
        lambda: status(driver, "chat").get("canaryWeight") == 50,
        60,
    )
    # Stable capacity is kept while the canary starts.
    assert cluster.get("deployment", "chat-r1", namespace)["spec"]["replicas"] == 1
    assert status(driver, "chat")["canaryRevision"] == 2

    def promoted():
        send_traffic(cluster, namespace, "chat")  # the analysis needs minRequests canary requests
        return status(driver, "chat").get("revision") == 2

    driver.run_until("revision 2 to be promoted", promoted, 240)
    st = status(driver, "chat")
    assert (st["previousRevision"], st["modelUri"], st.get("canaryRevision"), st["canaryWeight"]) == (
        1,
        tiny.checkpoint_uri,
        None,
        0,
    )
    assert [(h["revision"], h["outcome"]) for h in st["history"]] == [(1, "Promoted"), (2, "Promoted")]
    assert "analysis passed" in st["history"][1]["reason"]
    reasons = [e[2] for e in driver.events]
    assert "CanaryStarted" in reasons and "CanaryStep" in reasons and "Promoted" in reasons
    driver.run_until(
        "the old revision to be removed",
        lambda: cluster.get("deployment", "chat-r1", namespace) is None,
        30,
    )
    code, body = complete(serving_pods(cluster, namespace, "chat", revision=2)[0])
    assert code == 200 and body["choices"][0]["text"].split()[:1] == ["w8"]


def test_a_canary_failing_its_analysis_rolls_back(operator_cluster, namespace, serve_driver, tiny):
    cluster, driver = operator_cluster, serve_driver
    # A latency bound no server can meet: the first revision has nothing to compare with and
    # starts; the canary that follows fails its analysis.
    analysis = {"minRequests": 2, "maxErrorRate": 0.0, "maxP99LatencySeconds": 1e-6}
    steps = [{"weight": 50, "pauseSeconds": 1}, {"weight": 100, "pauseSeconds": 0}]
    cluster.apply(
        deployment_yaml("strict", tiny.export_uri, rollout={"steps": steps, "analysis": analysis}), namespace
    )
    become_available(cluster, driver, namespace, "strict")
    change_model(cluster, namespace, "strict", tiny.checkpoint_uri)

    def rolled_back():
        send_traffic(cluster, namespace, "strict")
        return any(h["outcome"] == "RolledBack" for h in status(driver, "strict").get("history", []))

    driver.run_until("the canary to be rolled back", rolled_back, 240)
    st = status(driver, "strict")
    rec = st["history"][-1]
    assert (rec["revision"], rec["modelUri"], rec["outcome"]) == (2, tiny.checkpoint_uri, "RolledBack")
    assert "p99 latency above the maximum 1e-06 s" in rec["reason"]
    assert (st["revision"], st["modelUri"], st.get("canaryRevision")) == (1, tiny.export_uri, None)
    assert cluster.get("deployment", "strict-r2", namespace) is None
    assert cluster.get("deployment", "strict-r1", namespace)["spec"]["replicas"] == 1
    assert any(e[1:3] == ("Warning", "RolledBack") for e in driver.events)
    # Level-based: the rolled-back model is not retried while the spec still names it.
    for _ in range(3):
        driver.step()
    st = status(driver, "strict")
    assert st.get("canaryRevision") is None and len(st["history"]) == 2
    progressing = driver.condition("deployments", "strict", "Progressing")
    assert progressing["reason"] == "RolledBack" and "name a different model" in progressing["message"]

    # A model the server cannot load: the canary pod exits and is rolled back with its exit code.
    change_model(cluster, namespace, "strict", tiny.export_uri + "-missing")
    driver.run_until(
        "the crashing canary to be rolled back",
        lambda: (
            status(driver, "strict")["history"][-1]["outcome"] == "RolledBack"
            and status(driver, "strict")["history"][-1]["revision"] == 3
        ),
        180,
    )
    reason = status(driver, "strict")["history"][-1]["reason"]
    assert reason.startswith("canary pod failed: pod strict-r3-") and "exited with code" in reason, reason
