"""Stages 5-6: exact deduplication and MinHash LSH near-duplicate removal.

MinHash follows FineWeb's layout (word 5-grams, 64-bit hashes, 14 bands x 8 rows) with
datasketch's "affine64" permutations: h -> a * fmix64(h) + b mod 2^64 with odd a, drawn from
numpy's RandomState(seed) exactly as datasketch draws them, so a datasketch MinHash fed the same
shingle hashes yields the same signature (the benchmark checks this). Signatures are computed for
many documents at once with numpy instead of one Python call per document.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_WORD = re.compile(r"\w+")
_P = np.uint64(0x100000001B3)  # multiplier combining word hashes into an n-gram hash
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
CACHE_WORDS = 1 << 18  # word hashes kept (~30 MB): the frequent words, whatever the corpus size
CHUNK_SHINGLES = 16384  # rows of the (shingles x permutations) matrix computed at once: ~14 MB at 112


def text_digest(text: str, seed: int) -> bytes:
    """16-byte keyed hash of the normalised text: exact-dedup key and validation-split draw."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16, key=seed.to_bytes(8, "little")).digest()


def split_draw(digest: bytes) -> float:
    """A number in [0, 1) fixed by the text: documents below validationFraction are held out."""
    return int.from_bytes(digest[:8], "little") / 2.0**64


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (wrapping arithmetic), as datasketch applies it."""
    h = h ^ (h >> _S33)
    h = h * _M1
    h = h ^ (h >> _S33)
    h = h * _M2
    return h ^ (h >> _S33)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) for num_perm affine permutations, drawn as datasketch's affine64 scheme draws them."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = gen.randint(0, 1 << 64, num_perm, dtype=np.uint64)
    return a, b


class Shingler:
    """Word n-gram hashes of a text; word hashes are cached (word frequencies are Zipfian)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._cache: dict[str, int] = {}

    def _word(self, w: str) -> int:
        h = self._cache.get(w)
        if h is None:
            h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            if len(self._cache) < CACHE_WORDS:
                self._cache[w] = h
        return h

    def __call__(self, text: str) -> np.ndarray:
        words = _WORD.findall(text.lower())
        w = np.fromiter((self._word(x) for x in words), dtype=np.uint64, count=len(words))
        n = self.n
        if len(w) < n:  # short documents are one shingle of all their words
            n = max(len(w), 1)
            if len(w) == 0:
                return np.zeros(1, dtype=np.uint64)
        keys = w[: len(w) - n + 1].copy()
        for j in range(1, n):
            keys = keys * _P + w[j : len(w) - n + 1 + j]
        return keys


def signatures(shingles: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signatures (D, num_perm) uint64 for D documents' shingle arrays (each non-empty)."""
    out = np.empty((len(shingles), len(a)), dtype=np.uint64)
    i = 0
    with np.errstate(over="ignore"):
        while i < len(shingles):
            j, total = i, 0
            while j < len(shingles) and (j == i or total + len(shingles[j]) <= CHUNK_SHINGLES):
                total += len(shingles[j])
                j += 1
            flat = fmix64(np.concatenate(shingles[i:j]))
            starts = np.cumsum([0] + [len(s) for s in shingles[i : j - 1]])
            phv = flat[:, None] * a[None, :] + b[None, :]  # (S, num_perm)
            out[i:j] = np.minimum.reduceat(phv, starts, axis=0)
            i = j
    return out


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(D, bands) uint64: one hash per band of rows consecutive signature values."""
    keys = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):
            keys = fmix64(keys * _P + sig[:, r : bands * rows : rows])
    return keys


class Clusters:
    """Documents joined by duplicate pairs; each cluster (connected component) keeps its lowest id.
    Only the distinct pairs are kept, so memory grows with the duplicates; the components are
    scipy's (C), not a Python loop per pair."""

    def __init__(self) -> None:
        self.pairs: list[np.ndarray] = []

    def join(self, pairs: np.ndarray) -> None:
        """pairs: (P, >=2) rows whose first two columns are ids."""
        if len(pairs):
            self.pairs.append(np.unique(pairs[:, :2].astype(np.uint64), axis=0))

    def _components(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids in a pair, sorted; each one's component label)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        pairs = np.unique(np.concatenate(self.pairs), axis=0)
        nodes, edges = np.unique(pairs, return_inverse=True)  # nodes sorted: index order = id order
        edges = edges.reshape(-1, 2)
        n = len(nodes)
        graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
        return nodes, connected_components(graph, directed=False)[1]

    def dropped(self) -> np.ndarray:
        """Sorted ids that are not their cluster's lowest."""
        if not self.pairs:
            return np.zeros(0, dtype=np.uint64)
        nodes, label = self._components()
        n = len(nodes)
        first = np.full(label.max() + 1, n, dtype=np.int64)
        np.minimum.at(first, label, np.arange(n))  # lowest node index (= lowest id) per cluster
        return nodes[first[label] != np.arange(n)]

    def with_any(self, ids: np.ndarray) -> np.ndarray:
        """Sorted ids of every cluster that holds one of `ids` (the removed documents' copies)."""
        if not self.pairs or not len(ids):
            return np.zeros(0, dtype=np.uint64)
        nodes, label = self._components()
        hit = np.unique(label[np.isin(nodes, ids.astype(np.uint64))])
        return nodes[np.isin(label, hit)]


def near_duplicates(keys: np.ndarray, sig: np.ndarray | None = None, threshold: float = 0.0) -> np.ndarray:
    """Indices to drop among D documents in id order with band keys (D, bands), in memory: the
    same pairs and clusters as the staged pipeline (runs.duplicate_pairs, Clusters). With
    threshold > 0 a pair is joined only when the share of equal signature values reaches it."""
    from capstan_trainer.prepare import runs

    ids = np.arange(keys.shape[0], dtype=np.uint64)
    clusters = Clusters()
    for band in range(keys.shape[1]):
        rec = np.zeros(len(ids), dtype=runs.RECORD)
        rec["k0"], rec["id"], rec["loc"] = keys[:, band], ids, ids
        pairs = runs.duplicate_pairs(runs.sort_records(rec))
        if threshold > 0 and sig is not None:
            pairs = pairs[[float(np.mean(sig[a] == sig[b])) >= threshold for a, b in pairs[:, 2:].tolist()]]
        clusters.join(pairs)
    return clusters.dropped().astype(np.int64)
