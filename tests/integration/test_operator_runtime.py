"""`python -m capstan_operator` against the real API server: the skeleton handlers set Pending
with a Waiting condition, post an Event, refuse a spec only the model can judge, serve liveness
and metrics, log JSON, and stop cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

pytestmark = pytest.mark.cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dataset(name: str, pattern: str = "A[0-9]+", seed: int = 0) -> str:
    return textwrap.dedent(f"""\
        apiVersion: capstan.dev/v1alpha1
        kind: Dataset
        metadata: {{name: {name}}}
        spec:
          seed: {seed}
          sources: [{{uri: "s3://corpus/*.jsonl", licence: CC0-1.0}}]
          pii: {{extra: [{{name: ID, pattern: "{pattern}"}}]}}
          output: {{uri: "s3://out/{name}"}}
        """)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except OSError as exc:
        return 0, str(exc)


@pytest.fixture
def operator(cluster, capstan_crds, namespace, tmp_path):
    ports = {"liveness": free_port(), "metrics": free_port()}
    env = {
        **cluster.env,
        "CAPSTAN_NAMESPACES": namespace,
        "CAPSTAN_BIND_ADDRESS": "127.0.0.1",
        "CAPSTAN_LIVENESS_PORT": str(ports["liveness"]),
        "CAPSTAN_METRICS_PORT": str(ports["metrics"]),
    }
    log = tmp_path / "operator.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "capstan_operator"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc, ports, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_operator_accepts_refuses_reports_and_stops(cluster, namespace, operator):
    proc, ports, log = operator
    base = "http://127.0.0.1:{}"
    cluster.wait_for(
        "the operator's liveness endpoint",
        lambda: http_get(base.format(ports["liveness"]) + "/healthz")[0] == 200,
    )

    cluster.apply(dataset("good"), namespace)
    status = cluster.wait_for(
        "Dataset good to be Pending",
        lambda: (
            ((cluster.get("dataset", "good", namespace) or {}).get("status") or {}).get("phase") == "Pending"
            and cluster.get("dataset", "good", namespace)["status"]
        ),
    )
    (cond,) = status["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Waiting", "True", "Accepted")
    assert "waiting for the Dataset reconciler" in cond["message"]
    assert status["observedGeneration"] == 1
    shown = cluster.kubectl("get", "capstan", "-n", namespace).stdout
    assert "dataset.capstan.dev/good" in shown and "Pending" in shown

    cluster.wait_for(
        "a Pending Event for Dataset good",
        lambda: any(
            e["reason"] == "Pending" and e["involvedObject"]["name"] == "good"
            for e in cluster.list("events", namespace)
        ),
    )

    # A spec change is seen: the condition follows the new generation.
    cluster.apply(dataset("good", seed=7), namespace)
    cluster.wait_for(
        "Dataset good to report generation 2",
        lambda: cluster.get("dataset", "good", namespace)["status"].get("observedGeneration") == 2,
    )

    # The schema cannot compile a regular expression; the model can, so the operator refuses it.
    cluster.apply(dataset("bad-regex", pattern="A[0-9"), namespace)
    bad = cluster.wait_for(
        "Dataset bad-regex to fail",
        lambda: (
            ((cluster.get("dataset", "bad-regex", namespace) or {}).get("status") or {}).get("phase")
            == "Failed"
            and cluster.get("dataset", "bad-regex", namespace)["status"]
        ),
    )
    assert bad["conditions"][0]["reason"] == "InvalidSpec"
    assert "spec.pii.extra[0]" in bad["conditions"][0]["message"]

    _, text = http_get(base.format(ports["metrics"]) + "/metrics")
    assert 'capstan_reconciles_total{kind="Dataset",outcome="ok"}' in text
    assert 'capstan_reconciles_total{kind="Dataset",outcome="invalid"}' in text
    assert 'capstan_reconcile_duration_seconds_count{kind="Dataset"}' in text

    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() == 0, f"operator did not exit 0 within 30 s of SIGTERM:\n{log.read_text()[-3000:]}"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert lines, log.read_text()[-2000:]
    assert all({"message", "severity", "timestamp"} <= line.keys() for line in lines)
    assert lines[-1]["message"] == "capstan operator stopped"
    assert any(line.get("object", {}).get("name") == "good" for line in lines)
