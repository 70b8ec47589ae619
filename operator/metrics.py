"""Prometheus metrics of the operator: reconciles, errors and durations per kind.

Handlers wrap their work in `observe(kind)`; `serve(address, port)` exposes /metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# A registry of our own: the default one also carries process/GC collectors, which tests of the
# exposition do not need and which would be registered twice on re-import.
REGISTRY = CollectorRegistry()

RECONCILES = Counter(
    "capstan_reconciles",
    "Handler runs per kind and outcome (ok, retry, invalid, error).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "capstan_reconcile_errors",
    "Handler runs per kind that raised (retry, invalid or unexpected error).",
    ["kind"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "capstan_reconcile_duration_seconds",
    "Wall time of one handler run per kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, kopf.TemporaryError):
        return "retry"
    if isinstance(exc, kopf.PermanentError):
        return "invalid"
    return "error"


@contextmanager
def observe(kind: str) -> Iterator[None]:
    """Count and time one handler run; exceptions are recorded and re-raised unchanged."""
    start = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        RECONCILES.labels(kind, _outcome(exc)).inc()
        ERRORS.labels(kind).inc()
        raise
    else:
        RECONCILES.labels(kind, "ok").inc()
    finally:
        DURATION.labels(kind).observe(time.perf_counter() - start)


def serve(address: str, port: int):
    """Start the /metrics HTTP server in a daemon thread; returns (server, thread)."""
    return start_http_server(port, addr=address, registry=REGISTRY)
