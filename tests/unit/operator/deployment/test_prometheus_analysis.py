"""Canary analysis judged from a real Prometheus (built by `make install`) that scrapes an in-test
target serving the stable and canary revisions' metrics under the names both runtimes serve."""

from __future__ import annotations

import pytest

from capstan_api.deployment import Analysis
from capstan_operator.deployment import promql
from tests.support import prometheus as prom

NS, NAME = "team-a", "chat"


def rev(n: int, **traffic) -> prom.Revision:
    return prom.revision(NS, NAME, n, **traffic)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    target = prom.Target(
        [
            rev(1, latency_s=0.2),  # stable
            rev(2, latency_s=0.9),  # slow canary: p99 ~4x stable's, still under the absolute 10 s
            rev(3, latency_s=0.2),  # healthy canary
            rev(4, latency_s=0.2, error_share=0.04),  # 4 % errors against stable's 0
        ]
    )
    r = prom.start(tmp_path_factory.mktemp("prometheus"), target)
    # Enough scrapes that increase() over the window sees every revision's traffic.
    r.wait_for(
        "the canary's requests in Prometheus",
        promql.render(Analysis().queries.requests, namespace=NS, name=NAME, revision="4", window="10s"),
        at_least=30,
    )
    yield r
    r.stop()


def judge(r, canary: int, **bounds):
    return promql.judge(r.url, Analysis(minRequests=20, **bounds), NS, NAME, canary, stable=1, seconds=10)


def test_slow_canary_fails_the_latency_bound_relative_to_stable(running):
    v = judge(running, 2)
    assert v.decided and not v.passed, v.summary
    assert "above 1.2x stable's" in v.summary and "(Prometheus, last 10s)" in v.summary


def test_canary_like_stable_passes(running):
    v = judge(running, 3)
    assert v.decided and v.passed, v.summary
    assert "stable error rate 0.000" in v.summary


def test_error_rate_above_stable_plus_one_point_fails_though_under_the_absolute_bound(running):
    v = judge(running, 4, maxErrorRate=0.1)
    assert v.decided and not v.passed, v.summary
    assert "error rate above stable's + 0.01" in v.summary
    # The canary's 1 error in 20 is exactly 0.05 above stable: a bound of 0.05 is a float tie
    # (failed once in CI as 0.050 > 0.05); a looser one passes.
    assert judge(running, 4, maxErrorRate=0.1, maxErrorRateIncrease=0.06).passed


def test_absolute_bound_still_applies(running):
    v = judge(running, 2, maxP99LatencySeconds=0.5, maxP99LatencyRatio=0)
    assert v.decided and not v.passed and "p99 latency above the maximum 0.5 s" in v.summary


def test_revision_without_traffic_keeps_the_step_waiting(running):
    v = judge(running, 9)
    assert not v.decided and "waiting for at least 20" in v.summary


def test_query_prometheus_refuses_keeps_the_step_undecided_with_its_message(running):
    a = Analysis.model_validate({"queries": {"requests": 'sum(rate(x{revision="{{ revision }}"}[5m])'}})
    v = promql.judge(running.url, a, NS, NAME, 2, 1, 10)
    assert not v.decided and "Prometheus analysis could not run" in v.summary and "bad_data" in v.summary


def test_unknown_template_variable_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="(?s)queries.requests.*unknown template variable.*'rev'"):
        Analysis.model_validate({"queries": {"requests": "sum(x{revision='{{ rev }}'})"}})
