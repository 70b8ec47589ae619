"""cluster: one worker joins the duplicate pairs (union-find, each cluster keeps its lowest id),
checks the error rate, and trains (or loads) the tokenizer on the sample. Memory grows with the
duplicates and the sample, not with the corpus.

Writes `drop.npy` (sorted ids removed as duplicates) and `tokenizer.json`.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import json
from collections import Counter
from collections.abc import Iterator

import numpy as np

from capstan_api import preparation
from capstan_trainer import storage
from capstan_trainer.prepare import runs
from capstan_trainer.prepare.dedup import Clusters
from capstan_trainer.prepare.read import InputError
from capstan_trainer.prepare.stages import dedup, mapper
from capstan_trainer.prepare.tokens import given_tokenizer, train_tokenizer
from capstan_trainer.prepare.work import Context, Progress, markers, write_marker

DROP_FILE = "drop.npy"
TOKENIZER_FILE = "tokenizer.json"


def run(ctx: Context) -> dict:
    spec = ctx.spec
    maps = markers(ctx, "map")
    markers(ctx, "dedup")  # every task's pairs are committed
    counts = sum((Counter(m["counts"]) for m in maps), Counter())
    check_error_rate(counts, maps, spec.max_error_rate)
    n = sum(m["documents"] for m in maps)
    with Progress(ctx) as progress:
        progress.documents_in = n
        removed = np.array(sorted(row[0] for m in maps for row in m.get("excluded") or []), np.uint64)
        exact_ids, drop, copies = find_duplicates(ctx, removed)
        progress.documents_out = n - len(drop)
        if n - len(drop) == 0:
            raise InputError("spec.sources: no documents left after licence, filters and deduplication")
        buf = io.BytesIO()
        np.save(buf, drop)
        storage.write_bytes(ctx.path("cluster", DROP_FILE), buf.getvalue())
        given = given_tokenizer(spec.tokenizer)
        if given:
            (tok, tok_json), sampled = given, 0
        else:
            texts = SampleTexts(ctx, len(maps), set(drop.tolist()))
            tok = train_tokenizer(iter(texts), spec.tokenizer)
            sampled = texts.count
            if not sampled:
                raise InputError(
                    "spec.output.validationFraction: no training-split document is left for the "
                    "tokenizer to learn from (or spec.tokenizer.sampleBytes is smaller than one document)"
                )
            tok_json = tok.to_str().encode("utf-8")
        storage.write_bytes(ctx.path("cluster", TOKENIZER_FILE), tok_json)
    body = {
        "documents": n,
        "exact": len(exact_ids),
        "near": len(drop) - len(exact_ids) - len(copies),
        "copiesOfRemoved": copies.tolist(),
        "sampleDocuments": sampled,
        "tokenizerSha256": hashlib.sha256(tok_json).hexdigest(),
    }
    write_marker(ctx, body)
    return body


def check_error_rate(counts: Counter, maps: list[dict], max_error_rate: float) -> None:
    records, bad = counts["records"], counts["malformed"]
    if records and bad / records > max_error_rate:
        by_file: Counter = Counter()
        first: dict[str, str] = {}
        for m in maps:
            by_file.update(m["malformedByFile"])
            first.update(m.get("malformedFirst", {}))
        worst = by_file.most_common(1)[0]
        example = f", the first at {first[worst[0]]}" if worst[0] in first else ""
        raise InputError(
            f"spec.maxErrorRate: {bad} of {records} records are malformed "
            f"({bad / records:.4%} > {max_error_rate:.4%}); most in {worst[0]} ({worst[1]}{example})"
        )


def find_duplicates(ctx: Context, removed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids dropped as exact duplicates, every id dropped, ids dropped as copies of a removed
    document), sorted. `removed` (spec.exclusions' matches) have dedup keys but no output line:
    they are never among the dropped, but a cluster holding one goes whole, its lowest id too,
    since a copy of a removed document holds what its removal was asked for."""
    near = ctx.spec.dedup.near
    tasks = preparation.dedup_tasks(ctx.spec)
    clusters = Clusters()
    exact = np.zeros(0, np.uint64)
    for t in range(tasks):
        pairs = np.load(io.BytesIO(storage.read_bytes(ctx.path("dedup", dedup.pairs_name(t)))))
        if ctx.spec.dedup.exact and t == tasks - 1:
            exact = np.unique(pairs[:, 0])
        elif near.threshold > 0 and len(pairs):
            pairs = pairs[similar(ctx, pairs, near.threshold)]
        clusters.join(pairs)
    dropped = np.setdiff1d(clusters.dropped(), removed)
    copies = np.setdiff1d(np.setdiff1d(clusters.with_any(removed), removed), dropped)
    return np.setdiff1d(exact, removed), np.union1d(dropped, copies), copies


def similar(ctx: Context, pairs: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the candidate pairs whose signatures agree on at least `threshold` of their values."""
    width = ctx.spec.dedup.near.bands * ctx.spec.dedup.near.rows * 8
    rows: dict[int, np.ndarray] = {}
    for loc in np.unique(pairs[:, 2:]).tolist():  # only documents in a pair: the duplicates
        part, row = loc >> runs.LOC_PART_SHIFT, loc & ((1 << runs.LOC_PART_SHIFT) - 1)
        data = storage.read_range(ctx.path("map", mapper.sigs_name(part)), row * width, width)
        rows[loc] = np.frombuffer(data, dtype="<u8")
    return np.array([float(np.mean(rows[a] == rows[b])) >= threshold for a, b in pairs[:, 2:].tolist()], bool)


class SampleTexts:
    """The sample's texts in id order across the parts, duplicates left out; streamed."""

    def __init__(self, ctx: Context, parts: int, drop: set[int]) -> None:
        self.ctx, self.parts, self.drop, self.count = ctx, parts, drop, 0

    def _part(self, p: int) -> Iterator[tuple[int, str]]:
        for line in mapper.read_docs(self.ctx.path("dedup", mapper.sample_name(p))):
            doc = json.loads(line)
            yield doc["id"], doc["text"]

    def __iter__(self) -> Iterator[str]:
        for doc_id, text in heapq.merge(*(self._part(p) for p in range(self.parts))):
            if doc_id not in self.drop:
                self.count += 1
                yield text
