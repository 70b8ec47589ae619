"""Preference pairs for DPO: where each pair lies in a preference Dataset's shards, and a
deterministic loader of them.

Each document of a preference Dataset is a chosen then a rejected sequence, each starting with a
DOC_START mask byte (trainer/shards.py), so the document starts found in the mask files give every
pair. The order is a pure function of (seed, fingerprint, pair index), as for the token loader:
pair index g -> epoch g // n, permuted position within it. A step takes pairs [cursor, cursor +
batch) and rank r's micro-batch a takes [a * micro * world + r * micro, ... + micro), so the
cursor (pairs consumed) is the whole loader state and resume is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from capstan_trainer import shards
from capstan_trainer.train.loader import Batch, Split, key_of, permute


def _read(split: Split, start: int, length: int) -> np.ndarray:
    pieces = split.ranges(start, length)
    blobs = split.fs.cat_ranges(
        [p for p, _, _ in pieces], [a for _, a, _ in pieces], [b for _, _, b in pieces]
    )
    for b in blobs:
        if isinstance(b, Exception):
            raise b
    return np.concatenate([np.frombuffer(b, dtype=split.dtype) for b in blobs])


@dataclass
class PairSet:
    """The pairs of one split: token and mask shards and the sequence starts (2 per pair + end)."""

    tokens: Split
    mask: Split
    starts: np.ndarray

    @classmethod
    def open(cls, tokens: Split, mask: Split) -> PairSet:
        if mask.total == 0:
            return cls(tokens, mask, np.zeros(1, np.int64))
        bytes_ = _read(mask, 0, mask.total)  # one byte per token: read once at start-up
        starts = np.flatnonzero(bytes_ & shards.DOC_START)
        if len(starts) % 2 or (len(starts) and starts[0] != 0):
            raise ValueError(f"{mask.uris[0]}: not preference pairs (odd number of sequences)")
        return cls(tokens, mask, np.append(starts, mask.total))

    @property
    def pairs(self) -> int:
        return (len(self.starts) - 1) // 2

    def batch(self, indices: list[int], seq_len: int, pad: int) -> Batch:
        """Rows: the pairs' chosen sequences, then their rejected ones, each cut to seqLen + 1
        tokens and padded (padding carries no loss)."""
        n = len(indices)
        tokens = np.full((2 * n, seq_len + 1), pad, dtype=np.int64)
        mask = np.zeros((2 * n, seq_len + 1), dtype=np.uint8)
        for r, k in enumerate(indices):
            for side in (0, 1):
                a, b = int(self.starts[2 * k + side]), int(self.starts[2 * k + side + 1])
                length = min(b - a, seq_len + 1)
                tokens[side * n + r, :length] = _read(self.tokens, a, length)
                mask[side * n + r, :length] = _read(self.mask, a, length)
        return Batch.of(torch.from_numpy(tokens), torch.from_numpy(mask))


class PairLoader:
    """This rank's micro-batches of pairs from a global cursor (pairs consumed)."""

    def __init__(
        self,
        pairs: PairSet,
        fingerprint: str,
        seed: int,
        seq_len: int,
        micro: int,
        batch_pairs: int,
        rank: int,
        world: int,
        pad: int,
        cursor: int = 0,
    ):
        if pairs.pairs == 0:
            raise ValueError("the preference Dataset has no training pairs")
        self.set, self.fingerprint, self.seed, self.seq_len = pairs, fingerprint, seed, seq_len
        self.micro, self.batch_pairs, self.rank, self.world, self.pad = micro, batch_pairs, rank, world, pad
        self.accum = batch_pairs // (micro * world)
        self.cursor = cursor

    def locate(self, g: int) -> int:
        epoch, pos = divmod(g, self.set.pairs)
        return permute(pos, self.set.pairs, key_of("pairs", self.seed, self.fingerprint, epoch))

    def step_batches(self) -> Iterator[Batch]:
        for a in range(self.accum):
            start = self.cursor + a * self.micro * self.world + self.rank * self.micro
            yield self.set.batch(
                [self.locate(g) for g in range(start, start + self.micro)], self.seq_len, self.pad
            )
        self.cursor += self.batch_pairs

    def close(self) -> None:
        pass


def validation_pairs(pairs: PairSet, n: int, micro: int, rank: int, world: int, seq_len: int, pad: int):
    """The first n validation pairs in order, split across ranks; every rank yields the same
    number of micro-batches, padding rows (pair 0 again) weighted 0. Yields (batch, row weight)."""
    per_step = micro * world
    for s in range(-(-n // per_step)):
        idx = [s * per_step + rank * micro + j for j in range(micro)]
        batch = pairs.batch([i if i < n else 0 for i in idx], seq_len, pad)
        yield batch, torch.tensor([1.0 if i < n else 0.0 for i in idx])
