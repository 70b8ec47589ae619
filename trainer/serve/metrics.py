"""Prometheus metrics of the inference server, under vLLM's names and labels (`vllm:*` with
`model_name`; HTTP responses as `http_requests_total{handler, method, status="2xx"}` like vLLM's
HTTP instrumentation), so one dashboard, one HPA metric and one canary analysis serve both
runtimes. What vLLM has no name for stays under `capstan_serve_*`."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# vLLM's own bucket bounds for these histograms (v0.11), so quantiles compare across runtimes.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75) + (
    (1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560)
)
TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5) + (
    (0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80)
)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680)

RUNNING_REQUESTS = "vllm:num_requests_running"
"""RUNNING_REQUESTS: the gauge the HPA scales on (either runtime)."""


class ServerMetrics:
    def __init__(self, model_name: str = "") -> None:
        r = self.registry = CollectorRegistry()
        m = ["model_name"]

        def hist(name: str, doc: str, buckets: tuple[float, ...]):
            return Histogram(name, doc, m, buckets=buckets, registry=r).labels(model_name)

        self.ttft = hist(
            "vllm:time_to_first_token_seconds", "Time from request arrival to its first token.", TTFT_BUCKETS
        )
        self.itl = _Both(
            hist("vllm:inter_token_latency_seconds", "Time between consecutive tokens.", TOKEN_BUCKETS),
            # vLLM's older name for the same observation (still served by v0.11, deprecated).
            hist("vllm:time_per_output_token_seconds", "Time per output token.", TOKEN_BUCKETS),
        )
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds", "Time from request arrival to its last token.", E2E_BUCKETS
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests queued for a batch slot.", m, registry=r
        ).labels(model_name)
        self.running = Gauge(RUNNING_REQUESTS, "Requests in the running batch.", m, registry=r).labels(
            model_name
        )
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed.", m, registry=r).labels(
            model_name
        )
        self.generation_tokens = Counter("vllm:generation_tokens", "Tokens generated.", m, registry=r).labels(
            model_name
        )
        self._success = Counter(
            "vllm:request_success", "Requests finished by the engine.", [*m, "finished_reason"], registry=r
        )
        self._model_name = model_name
        self._http = Counter(
            "http_requests",
            "Finished HTTP requests by route and status class.",
            ["handler", "method", "status"],
            registry=r,
        )
        self._codes = Counter(
            "capstan_serve_requests", "Finished /v1/ HTTP requests by status code.", ["status"], registry=r
        )

    def finished(self, reason: str) -> None:
        """One request the engine finished (reason as OpenAI's finish_reason: stop, length, abort)."""
        self._success.labels(self._model_name, reason).inc()

    def response(self, handler: str, method: str, status: int) -> None:
        """One finished HTTP response to a /v1/ route (`handler` is the route, not the raw path)."""
        self._http.labels(handler, method, f"{status // 100}xx").inc()
        self._codes.labels(str(status)).inc()

    def watch(self, waiting: Callable[[], float], running: Callable[[], float]) -> None:
        self.waiting.set_function(waiting)
        self.running.set_function(running)


class _Both:
    """Observes into two histograms (one value under vLLM's current and former names)."""

    def __init__(self, *hists) -> None:
        self.hists = hists

    def observe(self, value: float) -> None:
        for h in self.hists:
            h.observe(value)
