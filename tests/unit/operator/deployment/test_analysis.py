"""Canary analysis: parsing the server's Prometheus text, adding pods up, and the verdict."""

from __future__ import annotations

import pytest

from capstan_api.deployment import Analysis
from capstan_operator.deployment.analysis import Sample, judge, parse


def metrics_text(ok: int, errors: int, buckets: dict[str, int]) -> str:
    lines = [
        "# TYPE capstan_serve_requests_total counter",
        f'capstan_serve_requests_total{{status="200"}} {ok}.0',
        'capstan_serve_requests_total{status="400"} 1.0',
        f'capstan_serve_requests_total{{status="500"}} {errors}.0',
        "# TYPE capstan_serve_e2e_request_latency_seconds histogram",
        *(
            f'capstan_serve_e2e_request_latency_seconds_bucket{{le="{le}"}} {c}.0'
            for le, c in buckets.items()
        ),
        f"capstan_serve_e2e_request_latency_seconds_count {max(buckets.values())}.0",
        "capstan_serve_e2e_request_latency_seconds_sum 1.0",
    ]
    return "\n".join(lines) + "\n"


def test_parse_counts_5xx_as_errors_and_reads_the_histogram():
    s = parse(metrics_text(ok=18, errors=2, buckets={"0.1": 10, "1.0": 20, "+Inf": 21}))
    assert (s.requests, s.errors) == (21, 2)
    assert s.error_rate == pytest.approx(2 / 21)
    assert s.buckets == {0.1: 10, 1.0: 20, float("inf"): 21}


def test_quantile_interpolates_like_promql():
    s = Sample(buckets={0.1: 50, 0.5: 100, float("inf"): 100})
    assert s.quantile(0.5) == pytest.approx(0.1)
    assert s.quantile(0.75) == pytest.approx(0.3)
    assert Sample(buckets={1.0: 0, float("inf"): 10}).quantile(0.99) == 1.0  # in +Inf: highest bound
    assert Sample().quantile(0.99) is None


def test_pods_add_up():
    a = parse(metrics_text(9, 0, {"0.1": 9, "+Inf": 10}))
    b = parse(metrics_text(9, 1, {"0.1": 1, "+Inf": 11}))
    both = a.add(b)
    assert (both.requests, both.errors) == (21, 1)
    assert both.buckets[0.1] == 10


def test_verdicts():
    quick = Sample(requests=20, errors=0, buckets={0.05: 20, float("inf"): 20})
    assert judge(quick, Analysis()).passed
    few = judge(Sample(requests=3, buckets={0.05: 3, float("inf"): 3}), Analysis(minRequests=10))
    assert (few.decided, few.passed) == (False, False) and "waiting for at least 10" in few.summary
    errors = judge(
        Sample(requests=20, errors=2, buckets={0.05: 20, float("inf"): 20}), Analysis(maxErrorRate=0.05)
    )
    assert (errors.decided, errors.passed) == (True, False)
    assert "error rate 0.100" in errors.summary and "above the maximum 0.05" in errors.summary
    slow = judge(quick, Analysis(maxP99LatencySeconds=0.001))
    assert not slow.passed and "p99 latency above the maximum 0.001 s" in slow.summary
