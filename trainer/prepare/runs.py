"""Sorted runs of dedup records, and their merge: the external sort behind duplicate finding.

A record is four uint64 (key0, key1, id, loc): the key is an LSH band hash (key1 = 0) or the
16-byte exact-dedup digest; loc says where the document's signature row is (part << 40 | row).
The map stage spills one run file per RUN_DOCS documents, each holding every task's records
sorted by (key0, key1, id), task after task. The dedup stage merges the runs of one task in
chunks, so its memory is the chunks plus the largest group of equal keys: duplicates, not the
corpus.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from capstan_trainer import storage

RECORD = np.dtype([("k0", "<u8"), ("k1", "<u8"), ("id", "<u8"), ("loc", "<u8")])
RUN_DOCS = 16384  # documents per run file: 15 tasks x 16Ki x 32 B = 8 MB buffered at most
CHUNK_RECORDS = 65536  # records read from one run at a time in the merge (2 MB)
LOC_PART_SHIFT = 40


def sort_records(rec: np.ndarray) -> np.ndarray:
    return rec[np.lexsort((rec["id"], rec["k1"], rec["k0"]))]


def encode_run(tasks: list[np.ndarray]) -> bytes:
    """One run file: each task's records (all the same length) sorted, task after task."""
    return b"".join(sort_records(t).tobytes() for t in tasks)


class RunReader:
    """Streams one task's section of one run file, CHUNK_RECORDS at a time."""

    def __init__(self, uri: str, task: int, n: int) -> None:
        self.uri, self.start, self.n, self.pos = uri, task * n * RECORD.itemsize, n, 0

    def next_chunk(self) -> np.ndarray:
        take = min(CHUNK_RECORDS, self.n - self.pos)
        data = storage.read_range(self.uri, self.start + self.pos * RECORD.itemsize, take * RECORD.itemsize)
        self.pos += take
        return np.frombuffer(data, dtype=RECORD)

    @property
    def done(self) -> bool:
        return self.pos >= self.n


def _below(rec: np.ndarray, k0: int, k1: int) -> np.ndarray:
    return (rec["k0"] < k0) | ((rec["k0"] == k0) & (rec["k1"] < k1))


def merged(readers: list[RunReader]) -> Iterator[np.ndarray]:
    """Batches of records in (key0, key1, id) order over all runs; equal keys never straddle
    two batches, so a batch holds whole groups."""
    bufs = [r.next_chunk() for r in readers]
    while True:
        live = [i for i, r in enumerate(readers) if not r.done]
        if not live:
            rest = [b for b in bufs if len(b)]
            if rest:
                yield sort_records(np.concatenate(rest))
            return
        # Every unread record of run i is >= its last buffered key, so all keys strictly below
        # the smallest such key are buffered: they form complete groups.
        k0, k1 = min(
            (int(bufs[i]["k0"][-1]), int(bufs[i]["k1"][-1])) if len(bufs[i]) else (0, 0) for i in live
        )
        masks = [_below(b, k0, k1) for b in bufs]
        taken = [b[m] for b, m in zip(bufs, masks, strict=True)]
        if sum(len(t) for t in taken) == 0:
            # the runs ending at the bound hold nothing below it: read more of them
            for i in live:
                if not len(bufs[i]) or (int(bufs[i]["k0"][-1]), int(bufs[i]["k1"][-1])) == (k0, k1):
                    bufs[i] = np.concatenate([bufs[i], readers[i].next_chunk()])
            continue
        bufs = [b[~m] for b, m in zip(bufs, masks, strict=True)]
        for i in live:
            if not len(bufs[i]):
                bufs[i] = readers[i].next_chunk()
        yield sort_records(np.concatenate(taken))


def duplicate_pairs(batch: np.ndarray) -> np.ndarray:
    """(P, 4) uint64 rows (id, head id, loc, head loc) for every record whose key an earlier
    (lower id) record of the sorted batch shares; the head is the lowest id of the group."""
    n = len(batch)
    if n == 0:
        return np.zeros((0, 4), np.uint64)
    new = np.ones(n, dtype=bool)
    new[1:] = (batch["k0"][1:] != batch["k0"][:-1]) | (batch["k1"][1:] != batch["k1"][:-1])
    head = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    dup = ~new
    return np.stack(
        [batch["id"][dup], batch["id"][head[dup]], batch["loc"][dup], batch["loc"][head[dup]]], axis=1
    )
