"""Prometheus metrics of the operator: reconciles, errors and durations per kind, and the work
queue's depth and retries under controller-runtime's names (`workqueue_depth{name}`,
`workqueue_retries_total{name}`), so its dashboards and alerts apply unchanged.

The controller wraps each reconcile in `observe(kind)`; `serve(address, port)` exposes /metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# A registry of our own: the default one also carries process/GC collectors, which tests of the
# exposition do not need and which would be registered twice on re-import.
REGISTRY = CollectorRegistry()

RECONCILES = Counter(
    "capstan_reconciles",
    "Reconciles per kind and outcome: ok (done until something changes), requeue (asked to look "
    "again later), error (raised; retried with back-off).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "capstan_reconcile_errors",
    "Reconciles per kind that raised (each is retried with back-off).",
    ["kind"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "capstan_reconcile_duration_seconds",
    "Wall time of one reconcile per kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)


QUEUE = "capstan"
"""QUEUE: the `name` label of the operator's one work queue (all kinds share it)."""
DEPTH = Gauge("workqueue_depth", "Current depth of the work queue.", ["name"], registry=REGISTRY)
RETRIES = Counter(
    "workqueue_retries", "Keys re-queued after a failed reconcile.", ["name"], registry=REGISTRY
)


def track_depth(depth: Callable[[], int]) -> None:
    """workqueue_depth reads `depth()` at each scrape."""
    DEPTH.labels(QUEUE).set_function(depth)


@contextmanager
def observe(kind: str) -> Iterator[dict]:
    """Count and time one reconcile; it may set `["outcome"] = "requeue"` on what this yields.
    Exceptions are recorded as `error` and re-raised unchanged."""
    start = time.perf_counter()
    result = {"outcome": "ok"}
    try:
        yield result
    except BaseException:
        RECONCILES.labels(kind, "error").inc()
        ERRORS.labels(kind).inc()
        raise
    else:
        RECONCILES.labels(kind, result["outcome"]).inc()
    finally:
        DURATION.labels(kind).observe(time.perf_counter() - start)


def serve(address: str, port: int):
    """Start the /metrics HTTP server in a daemon thread; returns (server, thread)."""
    return start_http_server(port, addr=address, registry=REGISTRY)
