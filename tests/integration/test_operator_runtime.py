"""`python -m capstan_operator` against the real API server: its watches feed the reconcilers
(a Dataset refused by the licence policy fails without a pod and gets an Event), a spec only the
model can judge is refused, a spec change is seen, liveness and metrics are served, logs are JSON,
and SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import signal
import textwrap
import time

import pytest

from tests.support.operator_proc import OperatorProcess, http_get

pytestmark = pytest.mark.cluster


def dataset(name: str, pattern: str = "A[0-9]+", seed: int = 0, licence: str = "CC-BY-NC-4.0") -> str:
    return textwrap.dedent(f"""\
        apiVersion: capstan.dev/v1alpha1
        kind: Dataset
        metadata: {{name: {name}}}
        spec:
          seed: {seed}
          sources: [{{uri: "s3://corpus/*.jsonl", licence: {licence}}}]
          pii: {{extra: [{{name: ID, pattern: "{pattern}"}}]}}
          output: {{uri: "s3://out/{name}"}}
        """)


@pytest.fixture
def operator(cluster, capstan_crds, namespace, tmp_path):
    op = OperatorProcess(cluster, namespace, tmp_path / "operator.log")
    op.start()
    try:
        yield op.proc, op.ports, op.log
    finally:
        op.kill()


def test_operator_accepts_refuses_reports_and_stops(cluster, namespace, operator):
    proc, ports, log = operator
    base = "http://127.0.0.1:{}"
    cluster.wait_for(
        "the operator's liveness endpoint",
        lambda: http_get(base.format(ports["liveness"]) + "/healthz")[0] == 200,
    )

    # CC-BY-NC-4.0 is outside the operator's default licence policy.
    cluster.apply(dataset("nc"), namespace)
    status = cluster.wait_for(
        "Dataset nc to fail on its licence",
        lambda: (
            ((cluster.get("dataset", "nc", namespace) or {}).get("status") or {}).get("phase") == "Failed"
            and cluster.get("dataset", "nc", namespace)["status"]
        ),
    )
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["LicenseNotAllowed"]["status"] == "True"
    assert "spec.sources[0].licence: CC-BY-NC-4.0" in conds["LicenseNotAllowed"]["message"]
    assert status["observedGeneration"] == 1
    assert cluster.list("jobs", namespace) == [] and cluster.list("pods", namespace) == []
    shown = cluster.kubectl("get", "capstan", "-n", namespace).stdout
    assert "dataset.capstan.dev/nc" in shown and "Failed" in shown

    cluster.wait_for(
        "a LicenseNotAllowed Event for Dataset nc",
        lambda: any(
            e["reason"] == "LicenseNotAllowed" and e["involvedObject"]["name"] == "nc"
            for e in cluster.list("events", namespace)
        ),
    )

    # A spec change is seen: the status follows the new generation.
    cluster.apply(dataset("nc", seed=7), namespace)
    cluster.wait_for(
        "Dataset nc to report generation 2",
        lambda: cluster.get("dataset", "nc", namespace)["status"].get("observedGeneration") == 2,
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
    assert any("nc" in line["message"] for line in lines), "phase changes are logged"
