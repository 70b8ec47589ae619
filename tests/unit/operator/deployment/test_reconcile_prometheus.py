"""The Deployment reconciler with a Prometheus URL: the canary step is judged from PromQL (a real
Prometheus scraping an in-test target), not from the pods' /metrics, and a canary slower than the
stable revision is rolled back."""

from __future__ import annotations

import pytest

from capstan_operator.config import OperatorConfig
from capstan_operator.deployment import analysis as canary_analysis
from capstan_operator.deployment import reconcile as reconcile_deployment
from tests.support import prometheus as prom
from tests.unit.operator.fake_kube import FakeKube, write_status
from tests.unit.operator.resources import deployment

STEPS = [{"weight": 50, "pauseSeconds": 0}, {"weight": 100, "pauseSeconds": 0}]


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory):
    # Revision 1 (stable) answers in 0.2 s, revision 2 (the canary below) in 0.9 s.
    target = prom.Target(
        [prom.revision("team-a", "chat", 1, latency_s=0.2), prom.revision("team-a", "chat", 2, latency_s=0.9)]
    )
    r = prom.start(tmp_path_factory.mktemp("prometheus"), target)
    r.wait_for("three scrapes of the in-test target", 'count_over_time(up{job="static"}[1m])', at_least=3)
    yield r.url
    r.stop()


def test_slow_canary_is_rolled_back_on_the_prometheus_verdict(monkeypatch, prometheus_url):
    fake = FakeKube(monkeypatch)

    def no_scrape(*args):
        raise AssertionError("with a Prometheus URL the canary pods are not scraped")

    monkeypatch.setattr(canary_analysis, "scrape", no_scrape)
    cfg = OperatorConfig(prometheus_url=prometheus_url)
    body = deployment("chat", replicas=2, rollout={"steps": STEPS, "analysis": {"minRequests": 10}})

    def reconcile():
        out = reconcile_deployment.reconcile(body, cfg)
        write_status(body, out.status)
        return out

    reconcile()
    fake.make_ready("chat-r1")
    reconcile()
    assert body["status"]["phase"] == "Available"
    body["spec"]["model"]["uri"] = "s3://bucket/slower"
    reconcile()
    fake.make_ready("chat-r2")
    out = reconcile()
    st = body["status"]
    assert st["revision"] == 1 and "canaryRevision" not in st, st
    reason = st["history"][-1]["reason"]
    assert st["history"][-1]["outcome"] == "RolledBack" and "analysis failed at 50%" in reason
    assert "above 1.2x stable's" in reason and "(Prometheus, last 10s)" in reason, reason
    assert ("Warning", "RolledBack") in [e[:2] for e in out.events]
