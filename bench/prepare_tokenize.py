"""Tokenization throughput of prepare's token_stream vs calling tokenizers' batch encode directly.

    PYTHONPATH=.pypath python bench/prepare_tokenize.py [--mb 20]

Both encode the same documents with the same tokenizer; the baseline only calls
`encode_batch_fast` and takes the ids. Ratio = baseline time / ours (the issue asks >= 0.8).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from capstan_api.tokenizer import Tokenizer as TokenizerSpec
from capstan_trainer.prepare.tokens import ENCODE_BATCH, token_stream, train_tokenizer
from tests.unit.prepare import corpus  # noqa: E402


def main(mb: float) -> None:
    rng = random.Random(0)
    texts, size = [], 0
    while size < mb * 1e6:
        texts.append(corpus.good_doc(rng))
        size += len(texts[-1])
    tok = train_tokenizer(texts[:2000], TokenizerSpec(vocab_size=8192))
    eos = tok.token_to_id("<|end_of_text|>")
    best_ours, best_base = float("inf"), float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        n = 0
        for i in range(0, len(texts), ENCODE_BATCH):
            n += sum(
                len(e.ids)
                for e in tok.encode_batch_fast(texts[i : i + ENCODE_BATCH], add_special_tokens=False)
            )
        best_base = min(best_base, time.perf_counter() - t0)
        t0 = time.perf_counter()
        m = sum(len(flat) for flat, _ in token_stream(tok, texts, eos, "uint16"))
        best_ours = min(best_ours, time.perf_counter() - t0)
    assert m == n + len(texts)
    print(f"{len(texts)} documents, {size / 1e6:.1f} MB, {n} tokens")
    print(f"tokenizers encode_batch_fast: {best_base:.2f} s ({n / best_base / 1e6:.2f} M tokens/s)")
    print(f"prepare token_stream (+eos, numpy): {best_ours:.2f} s ({m / best_ours / 1e6:.2f} M tokens/s)")
    print(f"ratio (ours throughput / direct batch encode) = {best_base / best_ours:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20.0)
    main(ap.parse_args().mb)
