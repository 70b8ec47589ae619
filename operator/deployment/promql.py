"""Canary analysis from Prometheus: the spec's PromQL templates (spec.rollout.analysis.queries)
rendered for the canary revision and for the stable one over the same window, and the canary
judged against both the absolute bounds and the stable revision (analysis.judge_figures). Used
when the operator has a Prometheus URL (CAPSTAN_PROMETHEUS_URL); otherwise the direct scrape."""

from __future__ import annotations

import re

from capstan_api.deployment import Analysis, AnalysisQueries
from capstan_operator import prometheus
from capstan_operator.deployment.analysis import Figures, Verdict, judge_figures

MIN_WINDOW_S = 10
"""MIN_WINDOW_S: increase() needs two samples in its window; a few scrape intervals of the local
Prometheus (2 s), and well under a step's pause."""

_VARIABLE = re.compile(r"{{\s*(\w+)\s*}}")


def render(query: str, **values: str) -> str:
    """`{{ variable }}` replaced by its value (the API rejected unknown names at the door)."""
    return _VARIABLE.sub(lambda m: values[m.group(1)], query)


def window(seconds: float) -> str:
    """A PromQL range for the step so far: whole seconds, at least MIN_WINDOW_S."""
    return f"{max(int(seconds), MIN_WINDOW_S)}s"


def figures(
    url: str, queries: AnalysisQueries, namespace: str, name: str, revision: int, span: str
) -> Figures:
    """One revision's requests, error rate and p99 over `span`; raises prometheus.QueryError."""
    v = {"namespace": namespace, "name": name, "revision": str(revision), "window": span}
    requests = prometheus.number(url, render(queries.requests, **v)) or 0.0
    error_rate = prometheus.number(url, render(queries.error_rate, **v)) or 0.0
    p99 = prometheus.number(url, render(queries.p99_latency_seconds, **v))
    return Figures(requests, error_rate, p99)


def judge(
    url: str, analysis: Analysis, namespace: str, name: str, canary: int, stable: int, seconds: float
) -> Verdict:
    """The canary against the absolute bounds and the stable revision, both over the last
    `seconds` (the step so far). A Prometheus that cannot answer keeps the step undecided."""
    span = window(seconds)
    try:
        c = figures(url, analysis.queries, namespace, name, canary, span)
        s = figures(url, analysis.queries, namespace, name, stable, span)
    except prometheus.QueryError as e:
        return Verdict(False, False, f"Prometheus analysis could not run: {e}")
    v = judge_figures(c, analysis, s)
    return Verdict(v.decided, v.passed, f"{v.summary} (Prometheus, last {span})")
