"""From a request body to engine inputs: the JSON validated against its request model, the model
name checked, prompts as token ids (given, encoded, or chat messages rendered with the model's
template), the context length enforced, and the sampling parameters."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web

from capstan_trainer import chat_template
from capstan_trainer.generation.engine import Engine
from capstan_trainer.generation.sampling import SamplingParams
from capstan_trainer.serve.protocol import ApiError, ChatMessage, ChatRequest, CompletionRequest, parse
from capstan_trainer.serve.state import STATE, ServerState

Body = TypeVar("Body", CompletionRequest, ChatRequest)


async def read_request(request: web.Request, cls: type[Body]) -> tuple[ServerState, Engine, Body]:
    """The server state, its engine and the validated body; refused before the body is read while
    the server cannot take it."""
    st = request.app[STATE]
    eng = st.accepting()
    body = parse(cls, await _json(request))
    if body.n > eng.max_batch_size:
        # The n choices of a prompt decode together, so they must fit in one batch.
        raise ApiError(
            400, f"n: {body.n} exceeds the server's max batch size {eng.max_batch_size}", param="n"
        )
    if body.model is not None and body.model != st.model_name:
        raise ApiError(
            404,
            f"model {body.model!r} does not exist; this server serves {st.model_name!r}",
            param="model",
            code="model_not_found",
        )
    return st, eng, body


async def _json(request: web.Request) -> object:
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc


def completion_prompts(eng: Engine, prompt, max_prompts: int) -> list[list[int]]:
    """The token ids of each prompt of a completions request (a string, ids, or a list of either)."""
    tok, eos = eng.loaded.tokenizer, eng.loaded.eos_id
    if isinstance(prompt, str) or prompt and all(isinstance(x, int) for x in prompt):
        items = [prompt]
    else:
        items = list(prompt)
    if not items:
        raise ApiError(400, "prompt: must not be empty", param="prompt")
    if len(items) > max_prompts:
        raise ApiError(
            400, f"prompt: {len(items)} prompts, at most {max_prompts} per request", param="prompt"
        )
    out = []
    for item in items:
        ids = tok.encode(item, add_special_tokens=False).ids if isinstance(item, str) else list(item)
        if any(not 0 <= t < eng.model.cfg.vocab_size for t in ids):
            raise ApiError(400, "prompt: token id out of the vocabulary", param="prompt")
        # An empty prompt starts after end-of-text, where every training document starts.
        out.append(ids or ([eos] if eos is not None else [0]))
    return out


def render_chat(eng: Engine, messages: list[ChatMessage]) -> str:
    lm = eng.loaded
    bos, eos = chat_template.template_tokens(lm.tokenizer, lm.eos_id)
    try:
        return chat_template.render(
            lm.chat_template,
            [{"role": m.role, "content": m.text()} for m in messages],
            add_generation_prompt=True,
            bos_token=bos,
            eos_token=eos,
        )
    except Exception as exc:  # template errors are the model's, but the client sees why
        raise ApiError(400, f"messages: the chat template failed: {exc}", param="messages") from exc


def chat_prompt(eng: Engine, messages: list[ChatMessage]) -> list[int]:
    return eng.loaded.tokenizer.encode(render_chat(eng, messages), add_special_tokens=False).ids


def validate_lengths(eng: Engine, prompts: list[list[int]], max_tokens: int | None) -> None:
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


def sampling(body: Body, max_tokens: int, logprobs: int | None, echo: bool = False) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=max(0, body.top_k),
        stop=body.stop_list(),
        seed=body.seed,
        logprobs=logprobs,
        echo=echo,
        ignore_eos=body.ignore_eos,
    )
