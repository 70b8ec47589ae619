"""From engine events to HTTP: one engine request's events as an async iterator (observing the
latency and token metrics, cancelling the request when the client goes), its choices collected
for a JSON body, and server-sent events ending with `data: [DONE]`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from capstan_trainer.generation.engine import Engine, Event, QueueFull, Request, TokenLogprob
from capstan_trainer.generation.sampling import SamplingParams
from capstan_trainer.serve.protocol import ApiError
from capstan_trainer.serve.state import STREAM, ServerState


async def events(st: ServerState, prompt: list[int], params: SamplingParams, n: int) -> AsyncIterator[Event]:
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
                if ev.finish_reason != "error":
                    st.metrics.finished(ev.finish_reason)
            if ev.finish_reason == "error":
                raise ApiError(500, "generation failed", "server_error")
            yield ev
        if st.fault_delay_s:
            await asyncio.sleep(st.fault_delay_s)
        st.metrics.e2e.observe(time.monotonic() - req.arrival)
    finally:
        if open_choices:
            req.cancel()
            st.engine.wake()


@dataclass
class Collected:
    """The n choices of one engine request, each as a whole."""

    texts: list[str]
    reasons: list[str | None]
    logprobs: list[list[TokenLogprob]]
    """logprobs: per choice, the prompt's entries (with echo) then the completion's."""
    tokens: int = 0
    """tokens: generated over all choices."""


async def collect(st: ServerState, prompt: list[int], params: SamplingParams, n: int) -> Collected:
    out = Collected([""] * n, [None] * n, [[] for _ in range(n)])
    async for ev in events(st, prompt, params, n):
        out.texts[ev.index] += ev.text
        out.logprobs[ev.index] += (ev.prompt_logprobs or []) + ev.logprobs
        out.tokens += len(ev.token_ids)
        out.reasons[ev.index] = ev.finish_reason or out.reasons[ev.index]
    return out


def token_decoder(eng: Engine) -> Callable[[int], str]:
    """A token's text as logprobs show it (special tokens kept)."""
    tok = eng.loaded.tokenizer
    return lambda t: tok.decode([t], skip_special_tokens=False)


def token_usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


async def open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    request[STREAM] = resp  # so a deadline that passes mid-stream can still end it properly
    return resp


async def close_stream(resp: web.StreamResponse) -> web.StreamResponse:
    await resp.write(sse("[DONE]"))
    await resp.write_eof()
    return resp
