"""POST /v1/chat/completions: the messages rendered with the model's chat template, the reply's
n choices as one JSON body or streamed as deltas (a role delta per choice first)."""

from __future__ import annotations

import time
import uuid

from aiohttp import web

from capstan_trainer.generation.engine import Engine
from capstan_trainer.generation.sampling import SamplingParams
from capstan_trainer.serve.inputs import chat_prompt, read_request, sampling, validate_lengths
from capstan_trainer.serve.protocol import ChatRequest, chat_logprobs
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


async def chat(request: web.Request) -> web.StreamResponse:
    st, eng, body = await read_request(request, ChatRequest)
    prompt = chat_prompt(eng, body.messages)
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    validate_lengths(eng, [prompt], max_tokens)
    if max_tokens is None:
        max_tokens = eng.max_model_len - len(prompt)
    k = (body.top_logprobs or 0) if body.logprobs else None
    params = sampling(body, max_tokens, k)
    with st.in_flight():
        if body.stream:
            return await _stream(request, st, eng, body, prompt, params)
        return await _respond(st, eng, body, prompt, params)


def _envelope(object_: str, st: ServerState) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": object_,
        "created": int(time.time()),
        "model": st.model_name,
    }


async def _respond(
    st: ServerState, eng: Engine, body: ChatRequest, prompt: list[int], params: SamplingParams
) -> web.Response:
    n, token_text = body.n, token_decoder(eng)
    got = await collect(st, prompt, params, n)
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": got.texts[i]},
            "logprobs": chat_logprobs(got.logprobs[i], token_text) if body.logprobs else None,
            "finish_reason": got.reasons[i],
        }
        for i in range(n)
    ]
    usage = token_usage(len(prompt) * n, got.tokens)
    return web.json_response({**_envelope("chat.completion", st), "choices": choices, "usage": usage})


async def _stream(
    request: web.Request,
    st: ServerState,
    eng: Engine,
    body: ChatRequest,
    prompt: list[int],
    params: SamplingParams,
) -> web.StreamResponse:
    n, token_text = body.n, token_decoder(eng)
    resp = await open_stream(request)
    base = _envelope("chat.completion.chunk", st)
    for i in range(n):
        delta = {"role": "assistant", "content": ""}
        await resp.write(sse({**base, "choices": [{"index": i, "delta": delta, "finish_reason": None}]}))
    total = 0
    async for ev in events(st, prompt, params, n):
        total += len(ev.token_ids)
        delta = {"content": ev.text} if ev.text else {}
        c = {"index": ev.index, "delta": delta, "finish_reason": ev.finish_reason}
        if body.logprobs:
            c["logprobs"] = chat_logprobs(ev.logprobs, token_text)
        await resp.write(sse({**base, "choices": [c]}))
    if body.stream_options and body.stream_options.include_usage:
        await resp.write(sse({**base, "choices": [], "usage": token_usage(len(prompt) * n, total)}))
    return await close_stream(resp)
