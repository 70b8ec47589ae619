"""Near-duplicate removal vs datasketch's MinHashLSH on the same documents and parameters.

    PYTHONPATH=.pypath python bench/prepare_neardedup.py [--docs 20000]

Both get the same 5-gram shingle hashes, 112 permutations (14 bands x 8 rows), seed and
datasketch's affine64 scheme; datasketch inserts each MinHash into MinHashLSH(params=(14, 8)),
queries it, and the same union-find keeps the lowest id per cluster. Prints whether the duplicate
sets are equal and the speed ratio (datasketch time / ours).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from capstan_trainer.prepare import dedup
from tests.unit.prepare import corpus  # noqa: E402

BANDS, ROWS, SEED = 14, 8, 0


def docs(n: int) -> list[str]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        out.append(corpus.near_copy(rng, out[-1], 0.85) if i % 10 == 9 else corpus.good_doc(rng, lines=4))
    return out


def ours(texts: list[str]) -> set[int]:
    sh = dedup.Shingler(5)
    sig = dedup.signatures([sh(t) for t in texts], *dedup.permutations(BANDS * ROWS, SEED))
    return set(dedup.near_duplicates(dedup.band_keys(sig, BANDS, ROWS)).tolist())


def reference(texts: list[str]) -> set[int]:
    sh = dedup.Shingler(5)
    lsh = MinHashLSH(num_perm=BANDS * ROWS, params=(BANDS, ROWS))
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, t in enumerate(texts):
        m = MinHash(num_perm=BANDS * ROWS, seed=SEED, scheme="affine64", hashfunc=int)
        m.update_batch(sh(t).tolist())
        for j in lsh.query(m):
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
        lsh.insert(i, m)
    return {i for i in range(len(texts)) if find(i) != i}


def main(n: int) -> None:
    texts = docs(n)
    t0 = time.perf_counter()
    a = ours(texts)
    t1 = time.perf_counter()
    b = reference(texts)
    t2 = time.perf_counter()
    print(f"{n} documents, {sum(map(len, texts)) / 1e6:.1f} MB; planted near copies: {n // 10}")
    print(
        f"capstan: {t1 - t0:.2f} s, {len(a)} duplicates; datasketch MinHashLSH: {t2 - t1:.2f} s, {len(b)} duplicates"
    )
    print(f"same duplicate set: {a == b}; speed ratio (datasketch / capstan) = {(t2 - t1) / (t1 - t0):.1f}x")
    planted = int(np.sum(np.array(sorted(a)) % 10 == 9))
    print(f"of capstan's duplicates, {planted} are planted near copies (Jaccard <= 0.85, some well below)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000)
    main(ap.parse_args().docs)
