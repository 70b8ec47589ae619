"""Drift of live prompts from the training data: the statistics both sides compute and the score.

The same three statistics are computed on the Dataset's validation split by the preparation
(stored in its manifest as `stats.promptStats`) and on live prompts by the server (exported as
Prometheus metrics under capstan_drift_*):

- the length distribution: counts of texts (documents, prompts) per token-length bucket
  (LENGTH_BUCKETS, upper bounds inclusive, the last open);
- the byte-fallback share: of all tokens, those that are one of the byte-level BPE's 256 base
  symbols (no merge covered them: text unlike the tokenizer's training text, e.g. another script);
- the mean per-token surprisal, -ln p(token | the tokens before it) in nats, under the served model.
  The preparation has no model: the reference is the model's own validation loss on that split
  (capstan.json's validation.evalLoss, the same quantity over training-length windows).

The score (`score`) adds two parts, each 0 when nothing changed:

    psi       = sum_i (l_i - r_i) * ln(l_i / r_i)     over length buckets, shares smoothed by EPS
    surprisal = max(0, (s_live - s_ref) / s_ref)        relative rise of the mean surprisal
    byte      = max(0, b_live - b_ref)                  rise of the byte-fallback share
    score     = psi + surprisal + byte

PSI (population stability index) reads as: < 0.1 no change, 0.1-0.25 moderate, > 0.25 large.
Prompts are shorter than validation windows, so in-distribution prompts already have a somewhat
higher surprisal than the validation loss; set the threshold above what in-distribution traffic
scores (bench/ and the tests show both).
"""

from __future__ import annotations

import math

from pydantic import Field

from capstan_api.common import ApiModel

LENGTH_BUCKETS: tuple[float, ...] = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, math.inf)
EPS = 1e-4
"""EPS: floor of a bucket's share in the PSI, so an empty bucket on one side stays finite."""


def bucket_of(length: int) -> int:
    return next(i for i, b in enumerate(LENGTH_BUCKETS) if length <= b)


class PromptStats(ApiModel):
    """The statistics of a set of texts (a validation split, or live prompts)."""

    texts: int = Field(default=0, description="texts counted (documents or prompts).")
    length_counts: list[int] = Field(
        default_factory=lambda: [0] * len(LENGTH_BUCKETS),
        description="lengthCounts are texts per LENGTH_BUCKETS bucket of token length.",
    )
    tokens: int = Field(default=0, description="tokens in the texts.")
    byte_fallback_tokens: int = Field(
        default=0, description="byteFallbackTokens: tokens that are base bytes."
    )
    surprisal: float | None = Field(
        default=None, description="surprisal is the mean per-token surprisal in nats; absent when unmeasured."
    )

    def add(self, length: int, byte_tokens: int) -> None:
        self.texts += 1
        self.length_counts[bucket_of(length)] += 1
        self.tokens += length
        self.byte_fallback_tokens += byte_tokens

    def merged(self, other: PromptStats) -> PromptStats:
        """Counts added up (surprisal is left unset: a mean needs its weights; see the callers)."""
        return PromptStats(
            texts=self.texts + other.texts,
            length_counts=[a + b for a, b in zip(self.length_counts, other.length_counts, strict=True)],
            tokens=self.tokens + other.tokens,
            byte_fallback_tokens=self.byte_fallback_tokens + other.byte_fallback_tokens,
        )

    @property
    def byte_share(self) -> float:
        return self.byte_fallback_tokens / self.tokens if self.tokens else 0.0


class DriftScore(ApiModel):
    score: float = Field(
        description="score = psi + surprisalChange + byteFallbackChange (see capstan_api.drift)."
    )
    psi: float = Field(description="psi of the prompt-length distribution against the validation split.")
    surprisal_change: float | None = Field(
        default=None,
        description="surprisalChange: relative rise of the mean surprisal (absent if unmeasured).",
    )
    byte_fallback_change: float = Field(description="byteFallbackChange: rise of the byte-fallback share.")
    prompts: int = Field(description="prompts the live statistics cover.")


def psi(reference: list[int], live: list[int]) -> float:
    rt, lt = sum(reference) or 1, sum(live) or 1
    total = 0.0
    for r, v in zip(reference, live, strict=True):
        rs, ls = max(r / rt, EPS), max(v / lt, EPS)
        total += (ls - rs) * math.log(ls / rs)
    return total


def score(reference: PromptStats, live: PromptStats) -> DriftScore:
    p = psi(reference.length_counts, live.length_counts)
    s = None
    if reference.surprisal and live.surprisal is not None:
        s = max(0.0, (live.surprisal - reference.surprisal) / reference.surprisal)
    b = max(0.0, live.byte_share - reference.byte_share)
    return DriftScore(
        score=round(p + (s or 0.0) + b, 4),
        psi=round(p, 4),
        surprisal_change=None if s is None else round(s, 4),
        byte_fallback_change=round(b, 4),
        prompts=live.texts,
    )
