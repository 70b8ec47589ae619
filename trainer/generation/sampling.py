"""Next-token choice: greedy, or temperature / top-k / top-p sampling with a per-sequence seeded
generator (so a seeded request gives the same text whatever else is in the batch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    """temperature: 0 means greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """top_k: 0 (or -1) means no limit."""
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None
    """logprobs: how many alternatives to report per token; None reports none."""
    echo: bool = False
    ignore_eos: bool = False


def make_generator(seed: int | None, index: int) -> torch.Generator:
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed * 1009 + index)  # distinct streams for the n choices of one request
    return gen


def choose(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator) -> int:
    """logits (V,) float32 on any device; returns the chosen token id."""
    if params.temperature == 0:
        return int(torch.argmax(logits))
    scores = logits.float().cpu() / params.temperature
    if 0 < params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cum = torch.softmax(sorted_scores, -1).cumsum(-1)
        drop = cum - torch.softmax(sorted_scores, -1) >= params.top_p  # keep the token that crosses top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(0, order, sorted_scores)
    probs = torch.softmax(scores, -1)
    return int(torch.multinomial(probs, 1, generator=gen))


def top_logprobs(logprobs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    if k <= 0:
        return []
    vals, ids = torch.topk(logprobs, min(k, logprobs.shape[-1]))
    return list(zip(ids.tolist(), vals.tolist(), strict=True))
