"""Prometheus metrics of the inference server (names under capstan_serve_*). The operator's canary
analysis reads requests_total by status and the e2e latency histogram; the autoscaler reads
requests_running."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.ttft = Histogram(
            "capstan_serve_time_to_first_token_seconds",
            "Time from request arrival to its first generated token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "capstan_serve_inter_token_latency_seconds",
            "Time between consecutive generated tokens of a request.",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "capstan_serve_e2e_request_latency_seconds",
            "Time from request arrival to its last token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.waiting = Gauge(
            "capstan_serve_requests_waiting", "Requests queued for a batch slot.", registry=r
        )
        self.running = Gauge("capstan_serve_requests_running", "Requests in the running batch.", registry=r)
        self.prompt_tokens = Counter("capstan_serve_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generation_tokens = Counter("capstan_serve_generation_tokens", "Tokens generated.", registry=r)
        self.requests = Counter(
            "capstan_serve_requests", "Finished HTTP requests by status code.", ["status"], registry=r
        )

    def watch(self, waiting: Callable[[], float], running: Callable[[], float]) -> None:
        self.waiting.set_function(waiting)
        self.running.set_function(running)
