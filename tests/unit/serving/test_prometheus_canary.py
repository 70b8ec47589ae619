"""The whole analysis path without a cluster: two real built-in servers (a stable model and a
canary slowed by the test hook in trainer/serve/fault_hook.py) scraped by a real Prometheus with the
labels the cluster's pod job adds, judged by the spec's default PromQL."""

from __future__ import annotations

import pytest

from capstan_api.deployment import Analysis
from capstan_operator.deployment import promql
from tests.support import prometheus as prom
from tests.support import server_proc

NS, NAME = "team-a", "chat"
REQUESTS = 6


@pytest.fixture(scope="module")
def judged(tiny, tmp_path_factory):
    log = tmp_path_factory.mktemp("canary")
    fault = {"CAPSTAN_FAULT_SERVE_DELAY_S": "0.8", "CAPSTAN_FAULT_SERVE_MODEL": tiny.checkpoint_uri}
    stable = server_proc.launch(
        tiny.export_uri, str(log / "stable.log"), "--served-model-name", "tiny", env=fault
    )
    canary = server_proc.launch(
        tiny.checkpoint_uri, str(log / "canary.log"), "--served-model-name", "tiny", env=fault
    )
    running = None
    try:
        for s in (stable, canary):
            server_proc.wait_ready(s)
        labels = {
            s.url.removeprefix("http://"): {"namespace": NS, "capstan_owner": NAME, "revision": rev}
            for s, rev in ((stable, "1"), (canary, "2"))
        }
        running = prom.start(log / "prometheus", prom.Target([]), others=labels)
        # A scrape before any traffic, so increase() counts every request from zero.
        running.wait_for("a first scrape of the canary", 'count(up{revision="2"} == 1)', at_least=1)
        running.wait_for("a second scrape", 'count_over_time(up{revision="2"}[1m])', at_least=2)
        for _ in range(REQUESTS):
            for s in (stable, canary):
                status, body = server_proc.post(
                    s.url + "/v1/completions", {"prompt": "w1 w2", "max_tokens": 2}
                )
                assert status == 200, body
        q = Analysis().queries.requests
        running.wait_for(
            "the canary's requests in Prometheus",
            promql.render(q, namespace=NS, name=NAME, revision="2", window="60s"),
            at_least=REQUESTS - 1,  # increase() extrapolates; close to REQUESTS
        )
        yield promql.judge(running.url, Analysis(minRequests=3), NS, NAME, canary=2, stable=1, seconds=60)
    finally:
        if running is not None:
            running.stop()
        for s in (stable, canary):
            s.stop()


def test_slow_canary_fails_against_the_stable_revision(judged):
    print(judged.summary)  # the figures, for the README
    assert judged.decided and not judged.passed, judged.summary
    assert "above 1.2x stable's" in judged.summary, judged.summary
    assert "error rate 0.000" in judged.summary  # both served every request
