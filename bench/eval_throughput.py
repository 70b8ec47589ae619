"""Evaluation throughput: the perplexity scorer (rolling windows, batching, log-likelihood sums)
against a plain forward loop over the same windows in the same batches. Prints tokens/s of both
and their ratio (goal >= 0.9).

    python bench/eval_throughput.py --preset test --documents 64
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from capstan_trainer.evaluate.scoring import Scorer, rolling_windows
from capstan_trainer.model import Transformer, preset  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="test")
    p.add_argument("--documents", type=int, default=64)
    p.add_argument("--doc-len", type=int, default=600)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    vocab = 32000 if a.preset != "test" else 512
    model = Transformer(preset(a.preset, vocab_size=vocab, max_seq_len=a.context))
    model.init_weights(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model.to(device=device, dtype=dtype).eval()
    rng = random.Random(0)
    docs = [[rng.randrange(vocab) for _ in range(a.doc_len)] for _ in range(a.documents)]
    requests = [w for d in docs for w in rolling_windows(d, 0, a.context)]
    tokens = sum(len(c) for _, c in requests)
    scorer = Scorer(model, a.context, a.batch, device)

    def plain() -> None:
        inputs = sorted(((c + t)[-(a.context + 1) :][:-1] for c, t in requests), key=len, reverse=True)
        with torch.inference_mode():
            for i in range(0, len(inputs), a.batch):
                chunk = inputs[i : i + a.batch]
                batch = torch.zeros(len(chunk), len(chunk[0]), dtype=torch.long)
                for b, x in enumerate(chunk):
                    batch[b, : len(x)] = torch.tensor(x)
                model(batch.to(device)).float().sum().item()  # forces the computation to finish

    def timed(fn) -> float:
        fn()  # warm-up
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return tokens / best

    base = timed(plain)
    ours = timed(lambda: scorer.loglikelihoods(requests))
    result = {
        "preset": a.preset,
        "device": str(device),
        "tokens": tokens,
        "plain_tokens_per_s": round(base),
        "scorer_tokens_per_s": round(ours),
        "ratio": round(ours / base, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
