"""What every handler of one server process shares: the engine once loaded, readiness, draining
and the in-flight count that the drain waits on, and the metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from capstan_trainer.generation.engine import Engine
from capstan_trainer.serve.metrics import ServerMetrics
from capstan_trainer.serve.protocol import ApiError


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server; beyond them it gets a 4xx, never a 500."""

    max_prompts: int = 16
    """max_prompts: prompts in one completions request."""
    request_timeout_s: float = 600.0
    """request_timeout_s: longest a generation request may run; after it, 504 (or the stream ends)."""
    api_key: str = ""
    """api_key: when set, /v1/ requests need `Authorization: Bearer <api_key>`."""


@dataclass
class ServerState:
    model_name: str
    limits: Limits = field(default_factory=Limits)
    engine: Engine | None = None
    ready: bool = False
    draining: bool = False
    inflight: int = 0
    created: int = field(default_factory=lambda: int(time.time()))
    metrics: ServerMetrics = field(init=False)
    fault_delay_s: float = 0.0
    """fault_delay_s: added to every generation (fault_hook.py; tests only)."""

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(self.model_name)

    def attach(self, engine: Engine) -> None:
        self.engine = engine
        self.metrics.watch(lambda: engine.num_waiting, lambda: engine.num_running)

    def accepting(self) -> Engine:
        """The engine, or a 503 saying why new requests are refused."""
        if self.draining:
            raise ApiError(503, "the server is shutting down", "service_unavailable", code="shutting_down")
        if not self.ready or self.engine is None:
            raise ApiError(503, "the model is loading", "service_unavailable", code="model_loading")
        return self.engine

    @contextmanager
    def in_flight(self) -> Iterator[None]:
        """Counts a request while it generates, so SIGTERM's drain waits for it."""
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1


STATE = web.AppKey("state", ServerState)
STREAM = "capstan.stream"
"""STREAM: the request key of a server-sent-events response once its headers are sent."""
