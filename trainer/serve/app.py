"""The HTTP API (aiohttp): OpenAI-compatible completions, chat completions and models; health,
readiness and Prometheus metrics. Handlers turn a request into engine Requests and relay the
engine's events, as one JSON body or as server-sent events ending with `data: [DONE]`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from jinja2.sandbox import ImmutableSandboxedEnvironment
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from capstan_trainer.generation.engine import Engine, Event, QueueFull, Request
from capstan_trainer.generation.sampling import SamplingParams
from capstan_trainer.serve.metrics import ServerMetrics
from capstan_trainer.serve.protocol import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    chat_logprobs,
    completion_logprobs,
    parse,
)

log = logging.getLogger("capstan.serve")


@dataclass
class ServerState:
    model_name: str
    engine: Engine | None = None
    ready: bool = False
    draining: bool = False
    inflight: int = 0
    created: int = field(default_factory=lambda: int(time.time()))
    metrics: ServerMetrics = field(default_factory=ServerMetrics)

    def attach(self, engine: Engine) -> None:
        self.engine = engine
        self.metrics.watch(lambda: engine.num_waiting, lambda: engine.num_running)


STATE = web.AppKey("state", ServerState)


# ---- middleware: errors in OpenAI's shape, outcome counts, draining ---------------------------
@web.middleware
async def errors(request: web.Request, handler):
    st = request.app[STATE]
    counted = request.path.startswith("/v1/")
    try:
        resp = await handler(request)
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
        st.metrics.requests.labels(str(resp.status)).inc()
    return resp


def _accepting(st: ServerState) -> Engine:
    if st.draining:
        raise ApiError(503, "the server is shutting down", "service_unavailable", code="shutting_down")
    if not st.ready or st.engine is None:
        raise ApiError(503, "the model is loading", "service_unavailable", code="model_loading")
    return st.engine


async def _json(request: web.Request) -> object:
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc


def _check_model(st: ServerState, name: str | None) -> None:
    if name is not None and name != st.model_name:
        raise ApiError(404, f"model {name!r} does not exist; this server serves {st.model_name!r}",
                       param="model", code="model_not_found")  # fmt: skip


# ---- the generation core ---------------------------------------------------------------------
async def _events(st: ServerState, prompt: list[int], params: SamplingParams, n: int) -> AsyncIterator[Event]:
    """Events of one engine request; cancels it if the consumer stops early (client gone)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()
    req = Request(prompt, params, n, lambda ev: loop.call_soon_threadsafe(queue.put_nowait, ev))
    try:
        st.engine.submit(req)
    except QueueFull as exc:
        raise ApiError(429, f"server busy: {exc}", "rate_limit_exceeded", code="queue_full") from exc
    st.metrics.prompt_tokens.inc(len(prompt) * n)
    open_choices, first, last = n, None, None
    try:
        while open_choices:
            ev = await queue.get()
            now = time.monotonic()
            if ev.token_ids:
                st.metrics.generation_tokens.inc(len(ev.token_ids))
                if first is None:
                    first = now
                    st.metrics.ttft.observe(now - req.arrival)
                elif n == 1:
                    st.metrics.itl.observe(now - last)
                last = now
            if ev.finish_reason is not None:
                open_choices -= 1
            if ev.finish_reason == "error":
                raise ApiError(500, "generation failed", "server_error")
            yield ev
        st.metrics.e2e.observe(time.monotonic() - req.arrival)
    finally:
        if open_choices:
            req.cancel()
            st.engine.wake()


def _validate_lengths(eng: Engine, prompts: list[list[int]], max_tokens: int | None) -> int | None:
    limit = eng.max_model_len
    for p in prompts:
        want = len(p) + (max_tokens or 0)
        if len(p) >= limit or want > limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested {want} tokens "
                f"({len(p)} in the prompt, {max_tokens or 0} for the completion).",
                param="prompt" if len(p) >= limit else "max_tokens",
                code="context_length_exceeded",
            )
    return max_tokens


def _sampling(body, max_tokens: int, logprobs: int | None, echo: bool = False) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
        top_k=max(0, body.top_k), stop=body.stop_list(), seed=body.seed, logprobs=logprobs,
        echo=echo, ignore_eos=body.ignore_eos,
    )  # fmt: skip


def _sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


async def _open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    return resp


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


# ---- /v1/completions -------------------------------------------------------------------------
def _prompts(eng: Engine, prompt) -> list[list[int]]:
    tok, eos = eng.loaded.tokenizer, eng.loaded.eos_id
    if isinstance(prompt, str) or prompt and all(isinstance(x, int) for x in prompt):
        items = [prompt]
    else:
        items = list(prompt)
    if not items:
        raise ApiError(400, "prompt: must not be empty", param="prompt")
    out = []
    for item in items:
        ids = tok.encode(item, add_special_tokens=False).ids if isinstance(item, str) else list(item)
        if any(not 0 <= t < eng.model.cfg.vocab_size for t in ids):
            raise ApiError(400, "prompt: token id out of the vocabulary", param="prompt")
        # An empty prompt starts after end-of-text, where every training document starts.
        out.append(ids or ([eos] if eos is not None else [0]))
    return out


async def completions(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    eng = _accepting(st)
    body = parse(CompletionRequest, await _json(request))
    _check_model(st, body.model)
    if body.best_of not in (None, body.n):
        raise ApiError(400, "best_of: only best_of == n is supported", param="best_of")
    prompts = _prompts(eng, body.prompt)
    max_tokens = body.max_tokens
    _validate_lengths(eng, prompts, max_tokens)
    st.inflight += 1
    try:
        return await _complete(request, st, eng, body, prompts)
    finally:
        st.inflight -= 1


async def _complete(
    request, st: ServerState, eng: Engine, body: CompletionRequest, prompts
) -> web.StreamResponse:
    rid, created, tok = f"cmpl-{uuid.uuid4().hex}", int(time.time()), eng.loaded.tokenizer

    def text_of(t: int) -> str:
        return tok.decode([t], skip_special_tokens=False)

    def params_for(p: list[int]) -> SamplingParams:
        mt = body.max_tokens if body.max_tokens is not None else eng.max_model_len - len(p)
        return _sampling(body, mt, body.logprobs, body.echo)

    def echo_text(p: list[int]) -> str:
        return tok.decode(p, skip_special_tokens=False) if body.echo else ""

    def chunk(index: int, text: str, logprobs, reason) -> dict:
        return {"id": rid, "object": "text_completion", "created": created, "model": st.model_name,
                "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}]}  # fmt: skip

    n = body.n
    if body.stream:
        resp = await _open_stream(request)
        total = 0
        for pi, p in enumerate(prompts):
            offsets = dict.fromkeys(range(n), 0)
            started: set[int] = set()
            async for ev in _events(st, p, params_for(p), n):
                index = pi * n + ev.index
                text, lp = ev.text, None
                if ev.index not in started:
                    text = echo_text(p) + text
                    started.add(ev.index)
                if body.logprobs is not None:
                    entries = (ev.prompt_logprobs or []) + ev.logprobs
                    lp = completion_logprobs(entries, text_of, offsets[ev.index])
                offsets[ev.index] += len(text)
                total += len(ev.token_ids)
                await resp.write(_sse(chunk(index, text, lp, ev.finish_reason)))
        if body.stream_options and body.stream_options.include_usage:
            usage = _usage(sum(len(p) for p in prompts) * n, total)
            await resp.write(_sse({"id": rid, "object": "text_completion", "created": created,
                                   "model": st.model_name, "choices": [], "usage": usage}))  # fmt: skip
        await resp.write(_sse("[DONE]"))
        await resp.write_eof()
        return resp

    async def one(pi: int, p: list[int]) -> list[dict]:
        texts, reasons = [""] * n, [None] * n
        entries: list[list] = [[] for _ in range(n)]
        counts = [0] * n
        async for ev in _events(st, p, params_for(p), n):
            texts[ev.index] += ev.text
            entries[ev.index] += (ev.prompt_logprobs or []) + ev.logprobs
            counts[ev.index] += len(ev.token_ids)
            reasons[ev.index] = ev.finish_reason or reasons[ev.index]
        prefix = echo_text(p)
        return [{"index": pi * n + i, "text": prefix + texts[i],
                 "logprobs": completion_logprobs(entries[i], text_of, 0) if body.logprobs is not None else None,
                 "finish_reason": reasons[i], "_tokens": counts[i]} for i in range(n)]  # fmt: skip

    groups = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    choices = [c for g in groups for c in g]
    completion_tokens = sum(c.pop("_tokens") for c in choices)
    return web.json_response({"id": rid, "object": "text_completion", "created": created,
                              "model": st.model_name, "choices": choices,
                              "usage": _usage(sum(len(p) for p in prompts) * n, completion_tokens)})  # fmt: skip


# ---- /v1/chat/completions --------------------------------------------------------------------
_jinja = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)


def render_chat(eng: Engine, messages) -> str:
    lm = eng.loaded
    try:
        template = _jinja.from_string(lm.chat_template)
        return template.render(
            messages=[{"role": m.role, "content": m.text()} for m in messages],
            add_generation_prompt=True,
            bos_token="<|begin_of_text|>"
            if lm.tokenizer.token_to_id("<|begin_of_text|>") is not None
            else "",
            eos_token=lm.token_text(lm.eos_id),
        )
    except Exception as exc:  # template errors are the model's, but the client sees why
        raise ApiError(400, f"messages: the chat template failed: {exc}", param="messages") from exc


async def chat(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    eng = _accepting(st)
    body = parse(ChatRequest, await _json(request))
    _check_model(st, body.model)
    prompt = eng.loaded.tokenizer.encode(render_chat(eng, body.messages), add_special_tokens=False).ids
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    _validate_lengths(eng, [prompt], max_tokens)
    if max_tokens is None:
        max_tokens = eng.max_model_len - len(prompt)
    k = (body.top_logprobs or 0) if body.logprobs else None
    params = _sampling(body, max_tokens, k)
    st.inflight += 1
    try:
        return await _chat(request, st, eng, body, prompt, params)
    finally:
        st.inflight -= 1


async def _chat(
    request, st: ServerState, eng: Engine, body: ChatRequest, prompt, params
) -> web.StreamResponse:
    rid, created, tok, n = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), eng.loaded.tokenizer, body.n

    def text_of(t: int) -> str:
        return tok.decode([t], skip_special_tokens=False)

    if body.stream:
        resp = await _open_stream(request)
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": st.model_name}
        for i in range(n):
            delta = {"role": "assistant", "content": ""}
            await resp.write(_sse({**base, "choices": [{"index": i, "delta": delta, "finish_reason": None}]}))
        total = 0
        async for ev in _events(st, prompt, params, n):
            total += len(ev.token_ids)
            delta = {"content": ev.text} if ev.text else {}
            c = {"index": ev.index, "delta": delta, "finish_reason": ev.finish_reason}
            if body.logprobs:
                c["logprobs"] = chat_logprobs(ev.logprobs, text_of)
            await resp.write(_sse({**base, "choices": [c]}))
        if body.stream_options and body.stream_options.include_usage:
            await resp.write(_sse({**base, "choices": [], "usage": _usage(len(prompt) * n, total)}))
        await resp.write(_sse("[DONE]"))
        await resp.write_eof()
        return resp

    texts, reasons, entries, counts = [""] * n, [None] * n, [[] for _ in range(n)], 0
    async for ev in _events(st, prompt, params, n):
        texts[ev.index] += ev.text
        entries[ev.index] += ev.logprobs
        counts += len(ev.token_ids)
        reasons[ev.index] = ev.finish_reason or reasons[ev.index]
    choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                "logprobs": chat_logprobs(entries[i], text_of) if body.logprobs else None,
                "finish_reason": reasons[i]} for i in range(n)]  # fmt: skip
    return web.json_response({"id": rid, "object": "chat.completion", "created": created,
                              "model": st.model_name, "choices": choices,
                              "usage": _usage(len(prompt) * n, counts)})  # fmt: skip


# ---- models, health, metrics -----------------------------------------------------------------
async def models(request: web.Request) -> web.Response:
    st = request.app[STATE]
    data = [{"id": st.model_name, "object": "model", "created": st.created, "owned_by": "capstan",
             "max_model_len": st.engine.max_model_len if st.engine else None}]  # fmt: skip
    return web.json_response({"object": "list", "data": data})


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
