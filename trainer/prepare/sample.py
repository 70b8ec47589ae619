"""The tokenizer's training sample: deterministic, bounded, the same for any worker count.

The sample is every training-split document whose sample draw (a hash of its text) falls in a
draw bin below a cut-off, the cut-off being the highest that keeps the bytes under
`tokenizer.sampleBytes`. Each map worker counts bytes per bin (a histogram) and keeps as
candidates its smallest draws up to sampleBytes: a superset of its share of any global cut-off,
since its bytes below a draw never exceed the corpus's. Duplicates are removed afterwards.
"""

from __future__ import annotations

import heapq

import numpy as np

BINS = 1 << 16  # draw bins of the histogram: 1 TB of text in 15 MB steps


def draw(digest: bytes) -> int:
    """A 64-bit number fixed by the text (bytes 8-16 of the digest: independent of the split draw)."""
    return int.from_bytes(digest[8:16], "little")


def bin_of(d: int) -> int:
    return d >> 48


class Candidates:
    """Smallest draws whose bytes before them stay under `limit`; metadata only, no text."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.heap: list[tuple[int, int, int]] = []  # (-draw, -id, bytes): max-heap
        self.total = 0
        self.hist = np.zeros(BINS, dtype=np.uint64)

    def add(self, d: int, doc_id: int, nbytes: int) -> None:
        self.hist[bin_of(d)] += np.uint64(nbytes)
        heapq.heappush(self.heap, (-d, -doc_id, nbytes))
        self.total += nbytes
        while self.heap and self.total - self.heap[0][2] >= self.limit:
            self.total -= heapq.heappop(self.heap)[2]

    def ids(self) -> set[int]:
        return {-i for _, i, _ in self.heap}


def cutoff(hist: np.ndarray, limit: int) -> int:
    """The number of bins (from the lowest) whose bytes together stay within `limit`."""
    cum = np.cumsum(hist, dtype=np.uint64)
    return int(np.searchsorted(cum, np.uint64(limit), side="right"))
