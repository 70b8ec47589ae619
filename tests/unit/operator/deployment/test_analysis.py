"""Canary analysis: parsing the server's Prometheus text, adding pods up, and the verdict."""

from __future__ import annotations

import pytest

from capstan_api.deployment import Analysis
from capstan_operator.deployment.analysis import METRICS, Sample, judge, parse


def metrics_text(ok: int, errors: int, buckets: dict[str, int]) -> str:
    """What the built-in server serves (vLLM's names): responses by route and status class."""
    lines = [
        "# TYPE http_requests_total counter",
        f'http_requests_total{{handler="/v1/completions",method="POST",status="2xx"}} {ok}.0',
        'http_requests_total{handler="/v1/completions",method="POST",status="4xx"} 1.0',
        f'http_requests_total{{handler="/v1/completions",method="POST",status="5xx"}} {errors}.0',
        "# TYPE vllm:e2e_request_latency_seconds histogram",
        *(
            f'vllm:e2e_request_latency_seconds_bucket{{le="{le}",model_name="m"}} {c}.0'
            for le, c in buckets.items()
        ),
        f'vllm:e2e_request_latency_seconds_count{{model_name="m"}} {max(buckets.values())}.0',
        'vllm:e2e_request_latency_seconds_sum{model_name="m"} 1.0',
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


VLLM_TEXT = """\
# HELP http_requests_total Total number of requests by method, status and handler.
# TYPE http_requests_total counter
http_requests_total{handler="/v1/completions",method="POST",status="2xx"} 15.0
http_requests_total{handler="/v1/chat/completions",method="POST",status="2xx"} 3.0
http_requests_total{handler="/v1/chat/completions",method="POST",status="4xx"} 1.0
http_requests_total{handler="/v1/completions",method="POST",status="5xx"} 2.0
http_requests_total{handler="/tokenize",method="POST",status="5xx"} 7.0
# HELP http_requests_created Total number of requests by method, status and handler.
# TYPE http_requests_created gauge
http_requests_created{handler="/v1/completions",method="POST",status="2xx"} 1.7e+09
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_sum{model_name="tiny"} 9.5
vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="tiny"} 12.0
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="tiny"} 19.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="tiny"} 20.0
vllm:e2e_request_latency_seconds_count{model_name="tiny"} 20.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 0.0
"""


def test_parse_reads_vllms_names_counting_only_api_routes():
    s = parse(VLLM_TEXT, METRICS["vllm"])
    # /v1 routes only (the /tokenize errors are not the model's API), 5xx as errors.
    assert (s.requests, s.errors) == (21, 2)
    assert s.buckets == {0.3: 12, 1.0: 19, float("inf"): 20}
    verdict = judge(s, Analysis(minRequests=10, maxErrorRate=0.2, maxP99LatencySeconds=5))
    assert verdict.passed and "over 21 request(s)" in verdict.summary
    # One analysis for both runtimes: the built-in server's text reads the same with either.
    builtin = metrics_text(3, 1, {"+Inf": 4})
    assert parse(builtin, METRICS["vllm"]) == parse(builtin, METRICS["builtin"]) == parse(builtin)
    assert (parse(builtin).requests, parse(builtin).errors) == (5, 1)


def test_relative_bounds_against_stable():
    from capstan_operator.deployment.analysis import Figures, judge_figures

    stable = Figures(requests=100, error_rate=0.0, p99=0.5)
    a = Analysis(minRequests=10)
    assert judge_figures(Figures(50, 0.0, 0.6), a, stable).passed  # 1.2x exactly is allowed
    slow = judge_figures(Figures(50, 0.0, 0.61), a, stable)
    assert (slow.decided, slow.passed) == (True, False) and "above 1.2x stable's (0.600 s)" in slow.summary
    assert judge_figures(
        Figures(50, 0.0, 0.61), Analysis(minRequests=10, maxP99LatencyRatio=0), stable
    ).passed
    errors = judge_figures(Figures(50, 0.012, 0.5), Analysis(minRequests=10, maxErrorRate=0.05), stable)
    assert not errors.passed and "error rate above stable's + 0.01" in errors.summary
    # Without stable traffic there is nothing to compare: absolute bounds alone decide.
    idle = judge_figures(Figures(50, 0.0, 9.0), a, Figures(0, 0.0, None))
    assert idle.passed and "stable served nothing to compare" in idle.summary
