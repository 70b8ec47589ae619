"""POST /v1/completions: each prompt's n choices, as one JSON body or streamed chunk by chunk.
Choice i of prompt p has index p * n + i; with echo the prompt's text leads each choice."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import web

from capstan_trainer.generation.engine import Engine, TokenLogprob
from capstan_trainer.generation.sampling import SamplingParams
from capstan_trainer.serve.inputs import completion_prompts, read_request, sampling, validate_lengths
from capstan_trainer.serve.protocol import ApiError, CompletionRequest, completion_logprobs
from capstan_trainer.serve.relay import (
    close_stream,
    collect,
    events,
    open_stream,
    sse,
    token_decoder,
    token_usage,
)
from capstan_trainer.serve.state import ServerState


async def completions(request: web.Request) -> web.StreamResponse:
    st, eng, body = await read_request(request, CompletionRequest)
    if body.best_of not in (None, body.n):
        raise ApiError(400, "best_of: only best_of == n is supported", param="best_of")
    prompts = completion_prompts(eng, body.prompt, st.limits.max_prompts)
    validate_lengths(eng, prompts, body.max_tokens)
    reply = _Reply(st.model_name, eng, body)
    with st.in_flight():
        if body.stream:
            return await _stream(request, st, reply, prompts)
        return await _respond(st, reply, prompts)


@dataclass
class _Reply:
    """What every part of one request's response is built from."""

    model: str
    eng: Engine
    body: CompletionRequest
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def envelope(self, choices: list[dict], **extra) -> dict:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def params_for(self, prompt: list[int]) -> SamplingParams:
        b = self.body
        max_tokens = b.max_tokens if b.max_tokens is not None else self.eng.max_model_len - len(prompt)
        return sampling(b, max_tokens, b.logprobs, b.echo)

    def echo_text(self, prompt: list[int]) -> str:
        return self.eng.loaded.tokenizer.decode(prompt, skip_special_tokens=False) if self.body.echo else ""

    def logprobs(self, entries: list[TokenLogprob], offset: int) -> dict | None:
        if self.body.logprobs is None:
            return None
        return completion_logprobs(entries, token_decoder(self.eng), offset)

    def prompt_tokens(self, prompts: list[list[int]]) -> int:
        return sum(len(p) for p in prompts) * self.body.n


# ---- one JSON body ---------------------------------------------------------------------------
async def _respond(st: ServerState, reply: _Reply, prompts: list[list[int]]) -> web.Response:
    groups = await asyncio.gather(*(_choices(st, reply, pi, p) for pi, p in enumerate(prompts)))
    choices = [c for g, _ in groups for c in g]
    completion_tokens = sum(tokens for _, tokens in groups)
    usage = token_usage(reply.prompt_tokens(prompts), completion_tokens)
    return web.json_response(reply.envelope(choices, usage=usage))


async def _choices(st: ServerState, reply: _Reply, pi: int, prompt: list[int]) -> tuple[list[dict], int]:
    """The n choices of prompt `pi`, and the tokens they generated."""
    n = reply.body.n
    got = await collect(st, prompt, reply.params_for(prompt), n)
    prefix = reply.echo_text(prompt)
    choices = [
        {
            "index": pi * n + i,
            "text": prefix + got.texts[i],
            "logprobs": reply.logprobs(got.logprobs[i], 0),
            "finish_reason": got.reasons[i],
        }
        for i in range(n)
    ]
    return choices, got.tokens


# ---- server-sent events ----------------------------------------------------------------------
async def _stream(
    request: web.Request, st: ServerState, reply: _Reply, prompts: list[list[int]]
) -> web.StreamResponse:
    resp = await open_stream(request)
    total = 0
    for pi, p in enumerate(prompts):
        total += await _stream_prompt(resp, st, reply, pi, p)
    if reply.body.stream_options and reply.body.stream_options.include_usage:
        usage = token_usage(reply.prompt_tokens(prompts), total)
        await resp.write(sse(reply.envelope([], usage=usage)))
    return await close_stream(resp)


async def _stream_prompt(
    resp: web.StreamResponse, st: ServerState, reply: _Reply, pi: int, prompt: list[int]
) -> int:
    """One chunk per engine event of prompt `pi`'s choices; returns the tokens they generated."""
    n = reply.body.n
    offsets = dict.fromkeys(range(n), 0)
    started: set[int] = set()
    tokens = 0
    async for ev in events(st, prompt, reply.params_for(prompt), n):
        text = ev.text
        if ev.index not in started:
            text = reply.echo_text(prompt) + text
            started.add(ev.index)
        lp = reply.logprobs((ev.prompt_logprobs or []) + ev.logprobs, offsets[ev.index])
        offsets[ev.index] += len(text)
        tokens += len(ev.token_ids)
        choice = {"index": pi * n + ev.index, "text": text, "logprobs": lp, "finish_reason": ev.finish_reason}
        await resp.write(sse(reply.envelope([choice])))
    return tokens
