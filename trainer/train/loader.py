"""Deterministic token loader over shard manifests on any fsspec storage.

The global order of training sequences is a pure function of (seed, manifests, sequence index):
  index g -> mixture block g // 1024 -> source s and the source-local index l (exact per-block
  counts from the weights, positions shuffled per block) -> epoch l // n_s and position ->
  window = permutation_{seed, manifest fingerprint, epoch}(position) -> tokens
  [window * seqLen, window * seqLen + seqLen + 1) of the split's concatenated shards.
Nothing depends on the world size: a step takes global indices [cursor, cursor + batch), and
each rank takes its slice of those. The cursor (sequences consumed) is the checkpointed state.
Permutations are Feistel networks with cycle walking, so no index table is ever materialised.
Reads are ranged GETs (`cat_ranges`, concurrent on S3) with a background thread prefetching a
few micro-batches ahead.
"""

from __future__ import annotations

import bisect
import hashlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from capstan_trainer import shards, storage

MIX_BLOCK = 1024  # mixture resolution: per-block counts are exact, so weights are quantised to 1/1024
_M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-mixed 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def key_of(*parts: object) -> int:
    """A 64-bit key from any printable parts (stable across processes, unlike hash())."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


_ROUND = 0x632BE59BD9B4E019


def _walk(x: int, n: int, key: int, backwards: bool) -> int:
    """4-round Feistel network on [0, 2^bits) (bits even, 2^bits < 4n), repeated while outside
    [0, n) (cycle walking); `backwards` runs the rounds in reverse: the inverse map."""
    bits = max(2, (n - 1).bit_length())
    bits += bits % 2
    half = bits // 2
    mask = (1 << half) - 1
    while True:
        left, right = x >> half, x & mask
        if backwards:
            for rnd in reversed(range(4)):
                left, right = right ^ (_mix64(left ^ key ^ (rnd * _ROUND)) & mask), left
        else:
            for rnd in range(4):
                left, right = right, left ^ (_mix64(right ^ key ^ (rnd * _ROUND)) & mask)
        x = (left << half) | right
        if x < n:  # walking stays inside [0, 2^bits) < 4n, so this ends quickly
            return x


def permute(i: int, n: int, key: int) -> int:
    """A bijection on [0, n) chosen by `key`: 4-round Feistel network plus cycle walking."""
    return 0 if n <= 1 else _walk(i, n, key, backwards=False)


def unpermute(y: int, n: int, key: int) -> int:
    """The inverse of `permute`: the i with permute(i, n, key) == y (the cycle walked back)."""
    return 0 if n <= 1 else _walk(y, n, key, backwards=True)


@dataclass
class Split:
    """One split of one source: shard URIs with cumulative token offsets."""

    uris: list[str]
    starts: list[int]  # token offset of each shard in the concatenation
    total: int
    dtype: np.dtype
    fs: object = None  # the fsspec filesystem holding the shards
    paths: tuple[str, ...] = ()  # shard paths within fs (no protocol)

    def windows(self, seq_len: int) -> int:
        """Sequences of seq_len + 1 tokens starting every seq_len tokens (targets overlap inputs by 1)."""
        return max(0, (self.total - 1) // seq_len)

    def ranges(self, start: int, length: int) -> list[tuple[str, int, int]]:
        """(path in fs, byte start, byte end) pieces covering tokens [start, start + length)."""
        out, item = [], self.dtype.itemsize
        i = bisect.bisect_right(self.starts, start) - 1
        while length > 0:
            offset = start - self.starts[i]
            shard_len = (self.starts[i + 1] if i + 1 < len(self.starts) else self.total) - self.starts[i]
            take = min(length, shard_len - offset)
            out.append((self.paths[i], offset * item, (offset + take) * item))
            start, length, i = start + take, length - take, i + 1
        return out


def open_split(manifest_uri: str, manifest: shards.Manifest, name: str, mask: bool = False) -> Split:
    """The split's token shards, or with `mask` its loss-mask files (one byte per token, the same
    offsets), which the same window reads then cover."""
    base = (
        manifest_uri[: -len("manifest.json")].rstrip("/") if manifest_uri.endswith(".json") else manifest_uri
    )
    info = manifest.splits.get(name)
    dtype = np.dtype(np.uint8) if mask else np.dtype(manifest.dtype).newbyteorder("<")
    if info is None or not info.shards:
        return Split([], [], 0, dtype)
    uris, starts, pos = [], [], 0
    for s in info.shards:
        uris.append(storage.join(base, s.mask if mask else s.path))
        starts.append(pos)
        pos += s.tokens
    fs, _ = storage.filesystem(uris[0])
    return Split(uris, starts, pos, dtype, fs, tuple(storage.filesystem(u)[1] for u in uris))


def check_shards(split: Split) -> None:
    """Every shard exists with the size the manifest promises (one listing per folder)."""
    by_dir: dict[str, dict[str, int]] = {}
    for k, uri in enumerate(split.uris):
        folder = uri.rsplit("/", 1)[0]
        if folder not in by_dir:
            fs, path = storage.filesystem(folder)
            by_dir[folder] = {e["name"].rsplit("/", 1)[-1]: e["size"] for e in fs.ls(path, detail=True)}
        end = split.starts[k + 1] if k + 1 < len(split.starts) else split.total
        want = (end - split.starts[k]) * split.dtype.itemsize
        got = by_dir[folder].get(uri.rsplit("/", 1)[-1])
        if got != want:
            raise ValueError(f"{uri}: expected {want} bytes from the manifest, found {got}")


class SequenceOrder:
    """The pure map: global sequence index -> (source, window) for the train split."""

    def __init__(self, windows: list[int], weights: list[float], fingerprints: list[str], seed: int):
        if any(n <= 0 for n in windows):
            raise ValueError(f"every source needs at least one training sequence, got {windows}")
        self.windows, self.seed, self.fingerprints = windows, seed, fingerprints
        total = sum(weights)
        exact = [w / total * MIX_BLOCK for w in weights]
        counts = [int(e) for e in exact]
        # Largest remainder, ties to the earlier source: per-block counts sum to MIX_BLOCK exactly.
        for j in sorted(range(len(exact)), key=lambda j: (counts[j] - exact[j], j))[
            : MIX_BLOCK - sum(counts)
        ]:
            counts[j] += 1
        if any(c == 0 for c in counts):
            raise ValueError(f"weights {weights} give some source no sequences at 1/{MIX_BLOCK} resolution")
        self.counts = counts
        self.offsets = [sum(counts[:j]) for j in range(len(counts))]

    def locate(self, g: int) -> tuple[int, int]:
        if len(self.counts) == 1:
            src, local = 0, g
        else:
            block, j = divmod(g, MIX_BLOCK)
            slot = permute(j, MIX_BLOCK, key_of("mix", self.seed, *self.fingerprints, block))
            src = bisect.bisect_right(self.offsets, slot) - 1
            local = block * self.counts[src] + slot - self.offsets[src]
        epoch, pos = divmod(local, self.windows[src])
        return src, permute(pos, self.windows[src], key_of("epoch", self.seed, self.fingerprints[src], epoch))

    def index_of(self, src: int, window: int, epoch: int) -> int:
        """The inverse of `locate`: the global index g reading `window` of source `src` in its
        `epoch`-th pass (locate(g) == (src, window))."""
        n = self.windows[src]
        pos = unpermute(window, n, key_of("epoch", self.seed, self.fingerprints[src], epoch))
        local = epoch * n + pos
        if len(self.counts) == 1:
            return local
        block, r = divmod(local, self.counts[src])
        j = unpermute(self.offsets[src] + r, MIX_BLOCK, key_of("mix", self.seed, *self.fingerprints, block))
        return block * MIX_BLOCK + j


def read_windows(splits: list[Split], picks: list[tuple[int, int]], seq_len: int) -> torch.Tensor:
    """Tokens of each (source, window) as a (len(picks), seq_len + 1) int64 tensor."""
    out = np.empty((len(picks), seq_len + 1), dtype=np.int64)
    for src in sorted({s for s, _ in picks}):
        rows = [r for r, (s, _) in enumerate(picks) if s == src]
        split = splits[src]
        pieces = [split.ranges(picks[r][1] * seq_len, seq_len + 1) for r in rows]
        flat = [p for ps in pieces for p in ps]
        # One call per source: s3fs issues the ranged GETs concurrently.
        blobs = split.fs.cat_ranges([p for p, _, _ in flat], [a for _, a, _ in flat], [b for _, _, b in flat])
        k = 0
        for r, ps in zip(rows, pieces, strict=True):
            parts = []
            for _ in ps:
                if isinstance(blobs[k], Exception):
                    raise blobs[k]
                parts.append(np.frombuffer(blobs[k], dtype=split.dtype))
                k += 1
            out[r] = np.concatenate(parts)
    return torch.from_numpy(out)


@dataclass
class Batch:
    """One micro-batch: inputs and targets (B, T), and with a loss mask the targets' weights and
    the inputs' document index (attention stays within a document)."""

    x: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor | None = None
    """weight: (B, T) 1.0 where the target carries loss (its mask byte has LOSS), else 0.0."""
    docs: torch.Tensor | None = None
    """docs: (B, T) document index of each input token within its row, counted from 0."""

    @classmethod
    def of(cls, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> Batch:
        """From (B, T + 1) windows of tokens and of mask bytes."""
        if mask is None:
            return cls(tokens[:, :-1], tokens[:, 1:])
        weight = (mask[:, 1:] & shards.LOSS).float()
        docs = torch.cumsum((mask[:, :-1] & shards.DOC_START) // shards.DOC_START, dim=1)
        return cls(tokens[:, :-1], tokens[:, 1:], weight, docs)


class TrainLoader:
    """This rank's micro-batches from a global cursor, prefetched by one background thread.

    Step k's global batch is indices [cursor, cursor + batch_seqs); micro-batch a of rank r takes
    [a * micro * world + r * micro, ... + micro) of it, so the step's set is world-size independent.
    """

    def __init__(
        self,
        splits: list[Split],
        order: SequenceOrder,
        seq_len: int,
        micro_batch: int,
        batch_seqs: int,
        rank: int,
        world: int,
        cursor: int = 0,
        prefetch: int = 4,
        masks: list[Split] | None = None,
    ):
        self.splits, self.order, self.seq_len, self.masks = splits, order, seq_len, masks
        self.micro, self.batch_seqs, self.rank, self.world = micro_batch, batch_seqs, rank, world
        self.accum = batch_seqs // (micro_batch * world)
        self.cursor = cursor  # sequences handed to the trainer in completed steps
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(cursor,), daemon=True, name="loader")
        self._thread.start()

    def indices(self, cursor: int, a: int) -> range:
        start = cursor + a * self.micro * self.world + self.rank * self.micro
        return range(start, start + self.micro)

    def _produce(self, cursor: int) -> None:
        try:
            while not self._stop.is_set():
                for a in range(self.accum):
                    picks = [self.order.locate(g) for g in self.indices(cursor, a)]
                    tokens = read_windows(self.splits, picks, self.seq_len)
                    mask = read_windows(self.masks, picks, self.seq_len) if self.masks else None
                    self._put((tokens, mask))
                cursor += self.batch_seqs
        except BaseException as exc:  # hand the failure to the consumer, which re-raises it
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def step_batches(self) -> Iterator[Batch]:
        """The accum micro-batches of the next step; advances the cursor."""
        for _ in range(self.accum):
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield Batch.of(*item)
        self.cursor += self.batch_seqs

    def state_dict(self) -> dict:
        return {"sequences_consumed": self.cursor}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def validation_batches(
    splits: list[Split],
    source: int,
    seq_len: int,
    n_seqs: int,
    micro: int,
    rank: int,
    world: int,
    masks: list[Split | None] | None = None,
) -> Iterator[tuple[Batch, torch.Tensor]]:
    """The first n_seqs windows of a source's validation split, in order, split across ranks.

    Every rank yields the same number of micro-batches (FSDP forwards are collective); padding
    rows repeat window 0 with weight 0. Yields (batch, weight per row).
    """
    per_step = micro * world
    steps = -(-n_seqs // per_step)
    for s in range(steps):
        idx = [s * per_step + rank * micro + j for j in range(micro)]
        picks = [(source, i if i < n_seqs else 0) for i in idx]
        tokens = read_windows(splits, picks, seq_len)
        mask = read_windows(masks, picks, seq_len) if masks and masks[source] else None
        weight = torch.tensor([1.0 if i < n_seqs else 0.0 for i in idx])
        yield Batch.of(tokens, mask), weight
