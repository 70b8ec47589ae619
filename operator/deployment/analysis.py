"""Canary analysis from the serving pods' own Prometheus metrics: scrape each canary pod's
/metrics, add the pods up, and judge error rate and p99 latency against the spec's thresholds.

Counters are cumulative since each canary pod started, and every canary pod is new, so the sample
covers the canary's whole life: a step is judged on everything the canary has served so far.

Both runtimes serve the same names (the built-in server took vLLM's, trainer/serve/metrics.py):
responses counted by status class in http_requests_total, `handler` naming the route, and
vllm:e2e_request_latency_seconds. When the operator is given a Prometheus URL, prometheus.py
judges the canary from PromQL instead; this direct scrape is the fallback."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from capstan_api.deployment import Analysis

SCRAPE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class MetricNames:
    requests: str
    """requests: the counter family of finished HTTP requests, labelled `status` (200 or 2xx)."""
    latency: str
    """latency: the histogram of end-to-end request latency in seconds."""
    route_label: str = ""
    """route_label: the label naming the route, where `requests` counts every route; only /v1
    routes (the API) count. Empty: `requests` counts only those already."""


SERVING = MetricNames("http_requests", "vllm:e2e_request_latency_seconds", route_label="handler")
METRICS = {"builtin": SERVING, "vllm": SERVING}
"""METRICS by runtime: the same for both since the built-in server serves vLLM's names."""


@dataclass
class Sample:
    requests: float = 0.0
    errors: float = 0.0
    """errors are 5xx responses (a 4xx is the client's fault, not the model's)."""
    buckets: dict[float, float] = field(default_factory=dict)
    """buckets map each histogram upper bound (seconds, inf for +Inf) to its cumulative count."""

    def add(self, other: Sample) -> Sample:
        keys = set(self.buckets) | set(other.buckets)
        merged = {k: self.buckets.get(k, 0.0) + other.buckets.get(k, 0.0) for k in keys}
        return Sample(self.requests + other.requests, self.errors + other.errors, merged)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float | None:
        """Like PromQL's histogram_quantile: linear within the bucket; the highest finite bound
        when the quantile falls in +Inf. None without observations."""
        bounds = sorted(self.buckets)
        if not bounds or self.buckets[bounds[-1]] <= 0:
            return None
        rank = q * self.buckets[bounds[-1]]
        lower, below = 0.0, 0.0
        for b in bounds:
            count = self.buckets[b]
            if count >= rank:
                if math.isinf(b):
                    return lower
                return lower + (b - lower) * ((rank - below) / (count - below) if count > below else 1.0)
            lower, below = b, count
        return lower


def parse(text: str, names: MetricNames = SERVING) -> Sample:
    out = Sample()
    for fam in text_string_to_metric_families(text):
        if fam.name == names.requests:
            for s in fam.samples:
                api = not names.route_label or s.labels.get(names.route_label, "").startswith("/v1")
                if s.name.endswith("_total") and api:
                    out.requests += s.value
                    out.errors += s.value if s.labels.get("status", "").startswith("5") else 0.0
        elif fam.name == names.latency:
            for s in fam.samples:
                if s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    out.buckets[le] = out.buckets.get(le, 0.0) + s.value
    return out


def scrape(pod_ips: list[str], port: int, runtime: str = "builtin") -> tuple[Sample, list[str]]:
    """The canary pods' metrics added up, and the pods that could not be read (with why)."""
    total, unreadable = Sample(), []
    for ip in pod_ips:
        try:
            with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as resp:
                total = total.add(parse(resp.read().decode(), METRICS[runtime]))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            unreadable.append(f"{ip}: {exc}")
    return total, unreadable


@dataclass(frozen=True)
class Verdict:
    decided: bool
    """decided: enough requests to judge (minRequests)."""
    passed: bool
    summary: str


@dataclass(frozen=True)
class Figures:
    """What a revision showed over the analysed window."""

    requests: float
    error_rate: float
    p99: float | None
    """p99: end-to-end latency in seconds; None without observations."""

    def text(self) -> str:
        p99 = "n/a" if self.p99 is None else f"{self.p99:.3f} s"
        return f"error rate {self.error_rate:.3f}, p99 latency {p99} over {int(self.requests)} request(s)"


def judge(sample: Sample, analysis: Analysis) -> Verdict:
    """The direct scrape's verdict: absolute bounds only (the stable pods' counters span their whole
    life, not the canary's window, so comparing them would compare different things)."""
    return judge_figures(Figures(sample.requests, sample.error_rate, sample.quantile(0.99)), analysis)


def judge_figures(canary: Figures, analysis: Analysis, stable: Figures | None = None) -> Verdict:
    """Absolute bounds, and with `stable` (its figures over the same window) relative ones: canary
    p99 <= maxP99LatencyRatio x stable p99, error rate <= stable's + maxErrorRateIncrease."""
    a, n = analysis, int(canary.requests)
    figures = canary.text()
    if n < a.min_requests or n == 0:
        return Verdict(False, False, f"{figures}; waiting for at least {max(a.min_requests, 1)}")
    if canary.error_rate > a.max_error_rate:
        return Verdict(True, False, f"{figures}: error rate above the maximum {a.max_error_rate}")
    if canary.p99 is not None and canary.p99 > a.max_p99_latency_seconds:
        return Verdict(True, False, f"{figures}: p99 latency above the maximum {a.max_p99_latency_seconds} s")
    if stable is None or stable.requests <= 0:
        return Verdict(True, True, figures + ("; stable served nothing to compare" if stable else ""))
    versus = f"{figures}; stable {stable.text()}"
    if canary.error_rate > stable.error_rate + a.max_error_rate_increase:
        return Verdict(True, False, f"{versus}: error rate above stable's + {a.max_error_rate_increase}")
    if a.max_p99_latency_ratio > 0 and canary.p99 is not None and stable.p99 is not None:
        bound = a.max_p99_latency_ratio * stable.p99
        if canary.p99 > bound:
            return Verdict(
                True,
                False,
                f"{versus}: p99 latency above {a.max_p99_latency_ratio}x stable's ({bound:.3f} s)",
            )
    return Verdict(True, True, versus)
