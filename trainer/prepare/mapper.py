"""The per-document stages (read, licence, normalise, filter, dedup keys, PII) over a slice of files.

A map shard handles the files whose index is congruent to its shard index; its result, a `Part`,
holds the surviving documents in id order with their dedup keys. Only the merge sees all parts,
so deduplication, the split and tokenization are global and independent of the shard count.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from capstan_api.dataset import DatasetSpec
from capstan_trainer.prepare import dedup, pii, read
from capstan_trainer.prepare.filters import apply_filters
from capstan_trainer.prepare.normalize import normalize

SIGNATURE_BATCH = 1024  # documents whose shingles are held at once for signing


@dataclass
class Part:
    ids: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    licences: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    pii: list[dict[str, int]] = field(default_factory=list)
    bands: np.ndarray | None = None  # (D, bands) uint64
    sigs: np.ndarray | None = None  # (D, bands*rows) uint64, kept only when a Jaccard threshold is set
    counts: Counter = field(default_factory=Counter)
    """counts: records, malformed, bytes, files, licence:<id> (excluded), kept:<id>, normalised, rule:<reason>."""
    malformed_by_file: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    """files: input URI -> sha256 of its bytes."""
    seconds: Counter = field(default_factory=Counter)

    def to_bytes(self) -> bytes:
        meta = {
            "ids": self.ids,
            "licences": self.licences,
            "urls": self.urls,
            "pii": self.pii,
            "counts": dict(self.counts),
            "malformed_by_file": self.malformed_by_file,
            "files": self.files,
            "seconds": dict(self.seconds),
        }
        encoded = [t.encode("utf-8") for t in self.texts]
        arrays = {
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            "texts": np.frombuffer(b"".join(encoded), dtype=np.uint8),
            "lengths": np.array([len(e) for e in encoded], dtype=np.int64),
            "digests": np.frombuffer(b"".join(self.digests), dtype=np.uint8),
            "bands": self.bands if self.bands is not None else np.zeros((0, 0), np.uint64),
            "sigs": self.sigs if self.sigs is not None else np.zeros((0, 0), np.uint64),
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Part:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        meta = json.loads(z["meta"].tobytes())
        blob, ends = z["texts"].tobytes(), np.cumsum(z["lengths"]).tolist()
        texts = [blob[s:e].decode("utf-8") for s, e in zip([0, *ends][: len(ends)], ends, strict=True)]
        d = z["digests"].tobytes()
        return cls(
            ids=meta["ids"],
            texts=texts,
            digests=[d[i : i + 16] for i in range(0, len(d), 16)],
            licences=meta["licences"],
            urls=meta["urls"],
            pii=meta["pii"],
            bands=z["bands"] if z["bands"].size else None,
            sigs=z["sigs"] if z["sigs"].size else None,
            counts=Counter(meta["counts"]),
            malformed_by_file=meta["malformed_by_file"],
            files=meta["files"],
            seconds=Counter(meta["seconds"]),
        )


def run_map(
    spec: DatasetSpec, files: list[read.InputFile], allowed: set[str], index: int = 0, count: int = 1
) -> Part:
    part = Part()
    near = spec.dedup.near
    rules = pii.build_rules(spec.pii)
    shingler = dedup.Shingler(near.ngram)
    perm = dedup.permutations(near.bands * near.rows, spec.seed)
    shingles: list[np.ndarray] = []
    bands: list[np.ndarray] = []
    sigs: list[np.ndarray] = []
    clock = time.perf_counter

    def sign() -> None:
        if shingles:
            sig = dedup.signatures(shingles, *perm)
            bands.append(dedup.band_keys(sig, near.bands, near.rows))
            if near.threshold > 0:
                sigs.append(sig)
            shingles.clear()

    for f in files:
        if f.index % count != index:
            continue
        t0 = clock()
        src = spec.sources[f.source_index]
        data = read.read_raw(f)
        part.files[f.uri] = read.file_digest(data)
        part.counts["files"] += 1
        part.counts["bytes"] += len(data)
        stats = read.ReadStats()
        docs = list(read.read_file(f, src, data, stats))
        del data
        part.counts["records"] += stats.records
        part.counts["malformed"] += stats.malformed
        part.malformed_by_file.update(stats.malformed_by_file)
        t1 = clock()
        part.seconds["read"] += t1 - t0
        for doc in docs:
            t0 = clock()
            if doc.licence not in allowed:
                part.counts[f"licence:{doc.licence}"] += 1
                continue
            text = normalize(doc.text, spec.cleaning)
            if text != doc.text:
                part.counts["normalised"] += 1
            t1 = clock()
            text, reason = apply_filters(text, spec.filters)
            t2 = clock()
            part.seconds["normalise"] += t1 - t0
            part.seconds["filters"] += t2 - t1
            if reason:
                part.counts[f"rule:{reason}"] += 1
                continue
            part.ids.append(doc.id)
            part.digests.append(dedup.text_digest(text, spec.seed))
            if near.enabled:
                shingles.append(shingler(text))
                if len(shingles) >= SIGNATURE_BATCH:
                    sign()
            t3 = clock()
            text, found = pii.redact(text, rules)
            part.seconds["dedupKeys"] += t3 - t2
            part.seconds["pii"] += clock() - t3
            part.texts.append(text)
            part.licences.append(doc.licence)
            part.urls.append(doc.url)
            part.pii.append(found)
    t0 = clock()
    sign()
    part.seconds["dedupKeys"] += clock() - t0
    if near.enabled:
        part.bands = np.concatenate(bands) if bands else np.zeros((0, near.bands), np.uint64)
        if near.threshold > 0:
            part.sigs = np.concatenate(sigs) if sigs else np.zeros((0, near.bands * near.rows), np.uint64)
    return part


def combine(parts: list[Part]) -> Part:
    """One Part in global id order from map shards (each already in id order)."""
    if len(parts) == 1:
        return parts[0]
    out = Part()
    for p in parts:
        out.counts.update(p.counts)
        out.malformed_by_file.update(p.malformed_by_file)
        out.files.update(p.files)
        out.seconds.update(p.seconds)
    ids = [i for p in parts for i in p.ids]
    order = np.argsort(np.array(ids, dtype=np.int64), kind="stable").tolist()

    def gather(name: str) -> list:
        flat = [x for p in parts for x in getattr(p, name)]
        return [flat[i] for i in order]

    out.ids = [ids[i] for i in order]
    for name in ("texts", "digests", "licences", "urls", "pii"):
        setattr(out, name, gather(name))
    for name in ("bands", "sigs"):
        arrays = [getattr(p, name) for p in parts if getattr(p, name) is not None]
        if arrays:
            setattr(out, name, np.concatenate(arrays)[order])
    return out
