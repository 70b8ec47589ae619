"""The HTTP API (aiohttp): OpenAI-compatible completions (completions.py), chat completions
(chat.py) and models; health, readiness and Prometheus metrics. Errors leave every route in
OpenAI's shape, and each finished /v1/ request is counted by status."""

from __future__ import annotations

import asyncio
import hmac
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from capstan_trainer.serve.chat import chat
from capstan_trainer.serve.completions import completions
from capstan_trainer.serve.protocol import ApiError
from capstan_trainer.serve.relay import close_stream, sse
from capstan_trainer.serve.state import STATE, STREAM, ServerState

log = logging.getLogger("capstan.serve")


@web.middleware
async def errors(request: web.Request, handler):
    st = request.app[STATE]
    counted = request.path.startswith("/v1/")
    try:
        resp = await _guarded(request, handler, st)
    except ApiError as exc:
        resp = web.json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:  # routing (404/405) and body size (413) errors
        code = "request_too_large" if exc.status == 413 else None
        body = ApiError(exc.status, exc.reason, code=code).body()
        resp = web.json_response(body, status=exc.status, headers={"Allow": exc.headers.get("Allow", "")})
    except Exception:
        log.exception("unhandled error for %s %s", request.method, request.path)
        resp = web.json_response(ApiError(500, "internal server error", "server_error").body(), status=500)
    if counted:
        # The route's template, not the raw path: unknown paths must not grow the label set.
        route = request.match_info.route.resource
        handler_name = route.canonical if route is not None else "none"
        st.metrics.response(handler_name, request.method, resp.status)
    return resp


async def _guarded(request: web.Request, handler, st: ServerState) -> web.StreamResponse:
    """The API key (on /v1/ only: probes and metrics stay open, as with vLLM's --api-key) and the
    request deadline, after which the generation is cancelled."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    key = st.limits.api_key
    if key:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise ApiError(
                401, "a valid API key is required (Authorization: Bearer ...)", code="invalid_api_key"
            )
    try:
        async with asyncio.timeout(st.limits.request_timeout_s):
            return await handler(request)
    except TimeoutError:
        err = ApiError(504, f"request exceeded {st.limits.request_timeout_s:g} s", "timeout", code="timeout")
        stream = request.get(STREAM)
        if stream is None:
            raise err from None
        await stream.write(sse(err.body()))  # headers are sent: the error is the last event
        return await close_stream(stream)


async def models(request: web.Request) -> web.Response:
    st = request.app[STATE]
    model = {
        "id": st.model_name,
        "object": "model",
        "created": st.created,
        "owned_by": "capstan",
        "max_model_len": st.engine.max_model_len if st.engine else None,
    }
    return web.json_response({"object": "list", "data": [model]})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if st.ready and not st.draining:
        return web.json_response({"status": "ready"})
    why = "draining" if st.draining else "loading"
    return web.json_response({"status": why}, status=503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(state: ServerState, max_body_bytes: int = 8 * 1024 * 1024) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=max_body_bytes)
    app[STATE] = state
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
