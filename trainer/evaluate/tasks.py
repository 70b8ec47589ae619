"""Task files: multiple choice by log-likelihood and exact match by greedy generation, scored as
lm-evaluation-harness does (acc, acc_norm by character length; exact_match after stripping)."""

from __future__ import annotations

import json
import re

from capstan_trainer import chat_template, storage
from capstan_trainer.evaluate.scoring import Scorer
from capstan_trainer.generation.engine import Engine
from capstan_trainer.generation.sampling import SamplingParams
from capstan_trainer.prepare import conversation


class TaskFileError(ValueError):
    """A task or probe file that cannot be read; the message names the file and line."""


def read_jsonl(uri: str, required: tuple[str, ...], field: str, limit: int = 0) -> list[dict]:
    try:
        lines = storage.read_bytes(uri).decode("utf-8").splitlines()
    except FileNotFoundError as exc:
        raise TaskFileError(f"{field}: no such file {uri}") from exc
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise TaskFileError(f"{field}: {uri} line {n}: not JSON ({exc})") from exc
        missing = [k for k in required if k not in row]
        if missing:
            raise TaskFileError(f"{field}: {uri} line {n}: missing {', '.join(missing)}")
        rows.append(row)
        if limit and len(rows) >= limit:
            break
    return rows


def encode_pair(encode, context: str, continuation: str, prefix: int) -> tuple[list[int], list[int]]:
    """lm-eval's _encode_pair: trailing spaces of the context move to the continuation, and the
    continuation's tokens are taken from the encoding of the whole string."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation = context[-spaces:] + continuation
        context = context[:-spaces]
    whole = encode(context + continuation)
    ctx = encode(context)
    cont = whole[len(ctx) :]
    return (ctx or [prefix]), cont


def multiple_choice(scorer: Scorer, encode, rows: list[dict], prefix: int, field: str) -> dict[str, float]:
    requests, spans = [], []
    for n, row in enumerate(rows):
        choices, gold = row["choices"], row["gold"]
        if (
            not isinstance(choices, list)
            or not choices
            or not isinstance(gold, int)
            or not 0 <= gold < len(choices)
        ):
            raise TaskFileError(
                f"{field}: example {n}: choices must be a non-empty list and gold an index into it"
            )
        start = len(requests)
        for choice in choices:
            requests.append(encode_pair(encode, row["context"], " " + choice, prefix))
        spans.append((start, len(choices)))
    lls = scorer.loglikelihoods(requests)
    acc = acc_norm = 0
    for row, (start, k) in zip(rows, spans, strict=True):
        scores = lls[start : start + k]
        norm = [s / len(c) for s, c in zip(scores, row["choices"], strict=True)]
        acc += int(max(range(k), key=scores.__getitem__) == row["gold"])
        acc_norm += int(max(range(k), key=norm.__getitem__) == row["gold"])
    return {"acc": acc / len(rows), "acc_norm": acc_norm / len(rows), "examples": float(len(rows))}


def exact_match(
    engine: Engine, encode, rows: list[dict], task, prefix: int
) -> tuple[dict[str, float], list[str]]:
    prompts = [encode(r["prompt"]) or [prefix] for r in rows]
    limit = engine.max_model_len - task.max_tokens
    prompts = [p[-limit:] for p in prompts]
    params = SamplingParams(max_tokens=task.max_tokens, temperature=0, stop=list(task.stop))
    events = engine.generate(prompts, params)
    preds = ["".join(e.text for e in evs) for evs in events]
    hits = sum(p.strip() == str(r["answer"]).strip() for p, r in zip(preds, rows, strict=True))
    return {"exact_match": hits / len(rows), "examples": float(len(rows))}, preds


def chat_rows(rows: list[dict], field: str) -> list[tuple[list[dict], str]]:
    """(prompt messages, expected answer) per line: an `answer` field, else the last message
    when it is the assistant's."""
    out = []
    for n, row in enumerate(rows, 1):
        try:
            messages = conversation.parse(
                {"messages": row["messages"] + [{"role": "assistant", "content": ""}]}
            )[:-1]
        except conversation.BadRecord as exc:
            raise TaskFileError(f"{field}: example {n}: {exc}") from exc
        answer = row.get("answer")
        if answer is None and messages and messages[-1]["role"] == "assistant":
            answer = messages.pop()["content"]
        if not isinstance(answer, str) or not messages:
            raise TaskFileError(
                f"{field}: example {n}: needs an `answer` or a last assistant message, after a prompt"
            )
        out.append((messages, answer))
    return out


def chat(engine: Engine, lm, rows: list[dict], task, field: str) -> tuple[dict[str, float], list[str]]:
    """Greedy replies to chat prompts rendered with the model's template, scored by task.match."""
    examples = chat_rows(rows, field)
    bos, eos = chat_template.template_tokens(lm.tokenizer, lm.eos_id)
    if task.match == "regex":
        try:
            patterns = [re.compile(a) for _, a in examples]
        except re.error as exc:
            raise TaskFileError(f"{field}: answer is not a regular expression: {exc}") from exc
    prompts = []
    for messages, _ in examples:
        text = chat_template.render(
            lm.chat_template, messages, add_generation_prompt=True, bos_token=bos, eos_token=eos
        )
        prompts.append(
            lm.tokenizer.encode(text, add_special_tokens=False).ids[
                -(engine.max_model_len - task.max_tokens) :
            ]
        )
    params = SamplingParams(max_tokens=task.max_tokens, temperature=0, stop=list(task.stop))
    preds = ["".join(e.text for e in evs) for evs in engine.generate(prompts, params)]

    def hit(i: int, pred: str, answer: str) -> bool:
        if task.match == "contains":
            return answer.strip() in pred
        if task.match == "regex":
            return patterns[i].search(pred) is not None
        return pred.strip() == answer.strip()

    hits = sum(hit(i, p, a) for i, (p, (_, a)) in enumerate(zip(preds, examples, strict=True)))
    return {"accuracy": hits / len(examples), "examples": float(len(examples))}, preds
