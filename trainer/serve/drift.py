"""Drift metrics of live prompts (capstan_drift_*, beside the server's other metrics in the same
registry; the definitions are in capstan_api.drift): a histogram of prompt lengths in tokens over
LENGTH_BUCKETS, counters of prompt tokens and of those that fell back to base bytes, and the
summed surprisal of prompt tokens under the served model with the count of tokens it covers.

The engine reports each request's prompt once (its first choice), after the prefill, from the
hidden states it computed anyway; the surprisal (the output projection over the prompt's first
128 tokens) is computed for one prompt in --drift-surprisal-every (8), lengths and byte tokens
for every prompt."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Histogram
from tokenizers import Tokenizer

from capstan_api.drift import LENGTH_BUCKETS
from capstan_trainer.textstats import byte_token_ids, count_byte_tokens

PREFIX = "capstan_drift_"


class DriftMetrics:
    def __init__(self, registry: CollectorRegistry, tokenizer: Tokenizer) -> None:
        self.byte_ids = byte_token_ids(tokenizer)
        buckets = [b for b in LENGTH_BUCKETS if not math.isinf(b)]
        self.length = Histogram(
            f"{PREFIX}prompt_length_tokens", "Prompt lengths in tokens.", buckets=buckets, registry=registry
        )
        self.tokens = Counter(
            f"{PREFIX}prompt_tokens", "Prompt tokens observed for drift.", registry=registry
        )
        self.byte_tokens = Counter(
            f"{PREFIX}byte_fallback_tokens",
            "Prompt tokens that are base bytes of the tokenizer.",
            registry=registry,
        )
        self.surprisal = Counter(
            f"{PREFIX}surprisal_nats", "Summed -ln p(token | prefix) of prompt tokens.", registry=registry
        )
        self.surprisal_tokens = Counter(
            f"{PREFIX}surprisal_tokens", "Prompt tokens the surprisal sum covers.", registry=registry
        )

    def observe(self, prompt: list[int], surprisal_sum: float, scored: int) -> None:
        """`surprisal_sum` over the `scored` tokens after the first (the first has no prefix)."""
        self.length.observe(len(prompt))
        self.tokens.inc(len(prompt))
        self.byte_tokens.inc(count_byte_tokens(prompt, self.byte_ids))
        if scored:
            self.surprisal.inc(surprisal_sum)
            self.surprisal_tokens.inc(scored)
