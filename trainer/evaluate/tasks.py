"""Task files: multiple choice by log-likelihood and exact match by greedy generation, scored as
lm-evaluation-harness does (acc, acc_norm by character length; exact_match after stripping)."""

from __future__ import annotations

import json

from capstan_trainer import storage
from capstan_trainer.evaluate.scoring import Scorer
from capstan_trainer.generation.engine import Engine
from capstan_trainer.generation.sampling import SamplingParams


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
