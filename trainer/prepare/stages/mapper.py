"""map: the per-document work over this worker's files (every N-th input file).

read -> licence -> normalise -> filters -> toxicity -> exact digest + MinHash -> PII redaction.
Writes, under _work/map/: the kept documents (`docs-<i>.jsonl.zst`, id order), the dedup records as sorted runs
(`runs-<i>-<r>.bin`), signatures when a Jaccard threshold is set (`sigs-<i>.bin`), the tokenizer
sample's candidates and byte histogram (`sample-<i>.jsonl.zst`, `hist-<i>.npy`), then the marker
with the counts. Memory: one signature batch, one run, the sample's metadata.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from contextlib import ExitStack

import numpy as np
import zstandard

from capstan_api import preparation
from capstan_trainer import storage
from capstan_trainer.prepare import conversation, dedup, exclusions, pii, read, runs, sample, toxicity
from capstan_trainer.prepare.filters import apply_filters
from capstan_trainer.prepare.normalize import normalize
from capstan_trainer.prepare.work import Context, Progress, write_marker

SIGNATURE_BATCH = 1024  # documents whose shingles are held at once for signing


def docs_name(i: int) -> str:
    return f"docs-{i:05d}.jsonl.zst"


def run_name(i: int, r: int) -> str:
    return f"runs-{i:05d}-{r:04d}.bin"


def sigs_name(i: int) -> str:
    return f"sigs-{i:05d}.bin"


def sample_name(i: int) -> str:
    return f"sample-{i:05d}.jsonl.zst"


def hist_name(i: int) -> str:
    return f"hist-{i:05d}.npy"


class DedupKeys:
    """Signs documents in batches and spills every RUN_DOCS of them as one sorted run file."""

    def __init__(self, ctx: Context, sig_file) -> None:
        near = ctx.spec.dedup.near
        self.ctx, self.near, self.exact = ctx, near, ctx.spec.dedup.exact
        self.shingler = dedup.Shingler(near.ngram)
        self.perm = dedup.permutations(near.bands * near.rows, ctx.spec.seed)
        self.sig_file = sig_file
        self.pending: list[tuple[int, int, bytes, np.ndarray | None]] = []  # (id, loc, digest, shingles)
        self.tasks: list[list[np.ndarray]] = [[] for _ in range(preparation.dedup_tasks(ctx.spec))]
        self.buffered = 0
        self.run_sizes: list[int] = []

    def add(self, doc_id: int, row: int, digest: bytes, text: str) -> None:
        loc = self.ctx.index << runs.LOC_PART_SHIFT | row
        self.pending.append((doc_id, loc, digest, self.shingler(text) if self.near.enabled else None))
        if len(self.pending) >= SIGNATURE_BATCH:
            self._sign()

    def _sign(self) -> None:
        if not self.pending:
            return
        ids = np.array([p[0] for p in self.pending], dtype=np.uint64)
        locs = np.array([p[1] for p in self.pending], dtype=np.uint64)
        t = 0
        if self.near.enabled:
            sig = dedup.signatures([p[3] for p in self.pending], *self.perm)
            keys = dedup.band_keys(sig, self.near.bands, self.near.rows)
            if self.sig_file is not None:
                self.sig_file.write(np.ascontiguousarray(sig, dtype="<u8").tobytes())
            for b in range(self.near.bands):
                self.tasks[b].append(_records(keys[:, b], np.zeros_like(ids), ids, locs))
            t = self.near.bands
        if self.exact:
            d = np.frombuffer(b"".join(p[2] for p in self.pending), dtype=">u8").reshape(-1, 2)
            self.tasks[t].append(_records(d[:, 0].astype("<u8"), d[:, 1].astype("<u8"), ids, locs))
        self.buffered += len(self.pending)
        self.pending.clear()
        if self.buffered >= runs.RUN_DOCS:
            self._spill()

    def _spill(self) -> None:
        if not self.buffered or not self.tasks:
            return
        data = runs.encode_run([np.concatenate(t) for t in self.tasks])
        storage.write_bytes(self.ctx.path("map", run_name(self.ctx.index, len(self.run_sizes))), data)
        self.run_sizes.append(self.buffered)
        self.tasks = [[] for _ in self.tasks]
        self.buffered = 0

    def close(self) -> list[int]:
        self._sign()
        self._spill()
        return self.run_sizes


def _records(k0, k1, ids, locs) -> np.ndarray:
    rec = np.empty(len(ids), dtype=runs.RECORD)
    rec["k0"], rec["k1"], rec["id"], rec["loc"] = k0, k1, ids, locs
    return rec


def run(ctx: Context) -> dict:
    spec = ctx.spec
    allowed = set(ctx.allowed)
    rules = pii.build_rules(spec.pii)
    tox = toxicity.load(spec.filters.toxicity) if spec.filters.toxicity.enabled else None
    excluding = exclusions.matcher(spec)
    excluded: list[list] = []  # [id, url, rule index]: the finish stage writes excluded.jsonl
    files = [f for f in read.list_files(spec.sources) if f.index % ctx.workers == ctx.index]
    counts: Counter = Counter()
    seconds: Counter = Counter()
    stats = read.ReadStats()
    cands = sample.Candidates(spec.tokenizer.sample_bytes)
    train_sample = not spec.tokenizer.uri
    threshold = spec.dedup.near.enabled and spec.dedup.near.threshold > 0
    clock = time.perf_counter
    kept = 0
    keyed = 0  # documents given dedup keys: their signature rows (kept ones and removed ones)
    with ExitStack() as stack:
        progress = stack.enter_context(Progress(ctx))
        raw_docs = stack.enter_context(storage.open_write(ctx.path("map", docs_name(ctx.index))))
        docs_out = zstandard.ZstdCompressor(level=3).stream_writer(raw_docs, closefd=False)
        sigs = ctx.path("map", sigs_name(ctx.index))
        keys = DedupKeys(ctx, stack.enter_context(storage.open_write(sigs)) if threshold else None)
        for f in files:
            src = spec.sources[f.source_index]
            counts["files"] += 1
            t0 = clock()
            for doc in read.read_documents(f, src, stats):
                t1 = clock()
                seconds["read"] += t1 - t0
                progress.documents_in, progress.bytes_in = stats.records, stats.bytes
                # First: a removed document leaves no token and no tokenizer sample; it keeps
                # its dedup keys only so that the cluster stage drops its duplicates too.
                hit = excluding.match(doc.id, doc.url, doc.text) if excluding else None
                if hit is not None:
                    counts[f"exclusion:{hit}"] += 1
                    excluded.append([doc.id, doc.url, hit])
                    text = normalize(doc.text, spec.cleaning)
                    text = apply_filters(text, spec.filters)[0] or text
                    keys.add(doc.id, keyed, dedup.text_digest(text, spec.seed), text)
                    keyed += 1
                    t0 = clock()
                    continue
                if doc.licence not in allowed:
                    counts[f"licence:{doc.licence}"] += 1
                    t0 = clock()
                    continue
                messages = doc.messages and conversation.normalised(doc.messages, spec.cleaning)
                text = conversation.text_of(messages) if messages else normalize(doc.text, spec.cleaning)
                if text != doc.text:
                    counts["normalised"] += 1
                t2 = clock()
                filtered, reason = apply_filters(text, spec.filters)
                if not messages:  # a conversation takes the verdict only: its turns stay whole
                    text = filtered
                t3 = clock()
                seconds["normalise"] += t2 - t1
                seconds["filters"] += t3 - t2
                if tox is not None and not reason:
                    reason = tox.reason(text)
                    t = clock()
                    seconds["toxicity"] += t - t3
                    t3 = t
                if reason:
                    counts[f"rule:{reason}"] += 1
                    t0 = clock()
                    continue
                digest = dedup.text_digest(text, spec.seed)
                keys.add(doc.id, keyed, digest, text)
                keyed += 1
                t4 = clock()
                if messages:
                    messages, found = conversation.redacted(messages, rules)
                    text = conversation.text_of(messages)
                else:
                    text, found = pii.redact(text, rules)
                t5 = clock()
                seconds["dedupKeys"] += t4 - t3
                seconds["pii"] += t5 - t4
                line = {"id": doc.id, "d": digest.hex(), "licence": doc.licence, "url": doc.url, "pii": found}
                line["source"] = doc.source_index
                line["text"] = text
                if messages:
                    line["pair" if isinstance(messages, dict) else "messages"] = messages
                encoded = json.dumps(line, ensure_ascii=False).encode() + b"\n"
                docs_out.write(encoded)
                if train_sample and dedup.split_draw(digest) >= spec.output.validation_fraction:
                    cands.add(sample.draw(digest), doc.id, len(text.encode()))
                kept += 1
                progress.documents_out = kept
                t0 = clock()
                seconds["write"] += t0 - t5
        t0 = clock()
        run_sizes = keys.close()
        seconds["dedupKeys"] += clock() - t0
        docs_out.flush(zstandard.FLUSH_FRAME)
    if train_sample:
        t0 = clock()
        write_sample(ctx, cands)
        seconds["sample"] += clock() - t0
    counts["records"] = stats.records
    counts["malformed"] = stats.malformed
    counts["bytes"] = stats.bytes
    body = {
        "counts": dict(counts),
        "malformedByFile": stats.malformed_by_file,
        "malformedFirst": stats.first_error,
        "files": stats.files,
        "documents": kept,
        "runs": run_sizes,
        "excluded": excluded,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    write_marker(ctx, body)
    return body


def write_sample(ctx: Context, cands: sample.Candidates) -> None:
    """The candidates' texts (id order) in a second pass over the documents just written."""
    chosen = cands.ids()
    buf = io.BytesIO()
    np.save(buf, cands.hist)
    storage.write_bytes(ctx.path("map", hist_name(ctx.index)), buf.getvalue())
    with storage.open_write(ctx.path("map", sample_name(ctx.index))) as raw:
        out = zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False)
        for line in read_docs(ctx.path("map", docs_name(ctx.index))):
            doc = json.loads(line)
            if doc["id"] in chosen:
                d = bytes.fromhex(doc["d"])
                out.write(
                    json.dumps({"id": doc["id"], "draw": sample.draw(d), "text": doc["text"]}).encode()
                    + b"\n"
                )
        out.flush(zstandard.FLUSH_FRAME)


def read_docs(uri: str):
    """Lines (bytes) of a zstd JSONL file written by this package, streamed."""
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb", block_size=read.CHUNK) as f:
        reader = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f), read.CHUNK)
        yield from reader
