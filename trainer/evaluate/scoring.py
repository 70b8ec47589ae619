"""Log-likelihood scoring and perplexity, with lm-evaluation-harness's definitions so the numbers
compare: rolling windows at the context length (the first window starts with the end-of-text
token), then per-token, word and byte perplexity and bits per byte over all documents."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from capstan_trainer.model import Transformer


def rolling_windows(tokens: list[int], prefix: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) pairs covering `tokens` once, each input at most `max_len` tokens:
    lm-eval's get_rolling_token_windows(context_len=1) followed by make_disjoint_window."""
    if not tokens:
        return []
    out = []
    first = min(max_len, len(tokens))
    out.append(([prefix] + tokens[: first - 1], tokens[:first]))
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        end = done + n
        inp, pred = tokens[max(0, end - max_len - 1) : end - 1], tokens[end - n : end]
        out.append((inp, pred))
        done = end
    # make_disjoint_window: the context keeps only what the continuation does not cover
    return [(a[: len(a) - (len(b) - 1)], b) for a, b in out]


@dataclass
class Scorer:
    """Sums continuation log-probabilities for (context, continuation) token pairs, in batches of
    similar length (longest first, so a batch that runs out of memory does so at once)."""

    model: Transformer
    max_len: int
    batch_size: int
    device: torch.device
    progress: Callable[[int, int], None] | None = None

    @torch.inference_mode()
    def loglikelihoods(self, requests: list[tuple[list[int], list[int]]]) -> list[float]:
        inputs = []
        for ctx, cont in requests:
            whole = (ctx + cont)[-(self.max_len + 1) :]
            inputs.append((whole[:-1], len(cont)))
        order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i][0]))
        out = [0.0] * len(inputs)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            T = len(inputs[idx[0]][0])
            batch = torch.zeros(len(idx), T, dtype=torch.long)
            target = torch.zeros(len(idx), T, dtype=torch.long)
            keep = torch.zeros(len(idx), T, dtype=torch.bool)
            for b, i in enumerate(idx):
                inp, n_cont = inputs[i]
                ctx, cont = requests[i]
                full = (ctx + cont)[-(self.max_len + 1) :]
                batch[b, : len(inp)] = torch.tensor(inp)
                target[b, : len(inp)] = torch.tensor(full[1:])
                keep[b, len(inp) - n_cont : len(inp)] = True
            logits = self.model(batch.to(self.device)).float()  # (B, T, V)
            tgt = target.to(self.device)
            lp = logits.gather(-1, tgt[..., None])[..., 0] - torch.logsumexp(logits, -1)  # (B, T)
            sums = (lp * keep.to(self.device)).sum(-1).tolist()
            for b, i in enumerate(idx):
                out[i] = sums[b]
            if self.progress:
                self.progress(min(start + self.batch_size, len(order)), len(order))
        return out


def count_words(text: str) -> int:
    return len(re.split(r"\s+", text))


def perplexity(scorer: Scorer, encode, texts: list[str], prefix: int) -> dict[str, float]:
    """lm-eval's wikitext metrics over `texts` (each document scored with rolling windows)."""
    requests, owner = [], []
    token_count = 0
    for d, text in enumerate(texts):
        tokens = encode(text)
        token_count += len(tokens)
        for w in rolling_windows(tokens, prefix, scorer.max_len):
            requests.append(w)
            owner.append(d)
    lls = scorer.loglikelihoods(requests)
    total = sum(lls)
    words = sum(count_words(t) for t in texts)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "token_perplexity": math.exp(-total / token_count),
        "word_perplexity": math.exp(-total / words),
        "byte_perplexity": math.exp(-total / nbytes),
        "bits_per_byte": -total / nbytes / math.log(2),
        "documents": float(len(texts)),
        "tokens": float(token_count),
    }


def check_gates(gates, metrics: dict[str, float]) -> tuple[list[dict], bool]:
    """Each gate's value and verdict; a gate on a metric that was not computed fails."""
    out = []
    for g in gates:
        value = metrics.get(g.metric)
        ok = value is not None and (g.min is None or value >= g.min) and (g.max is None or value <= g.max)
        row = {"metric": g.metric, "value": value, "passed": ok}
        if g.min is not None:
            row["min"] = g.min
        if g.max is not None:
            row["max"] = g.max
        if value is None:
            row["reason"] = "metric not computed"
        out.append(row)
    return out, all(r["passed"] for r in out)
