"""dedup: duplicate pairs per task (an LSH band, or the exact digest) by a sorted merge of every
map worker's runs; this worker takes the tasks t with t % workers == index. It also writes the
tokenizer sample's share of the map parts p with p % workers == index (see sample.py).

Writes `pairs-<task>.npy` ((P, 4) uint64: id, head id, loc, head loc) and `sample-<part>.jsonl.zst`.
"""

from __future__ import annotations

import io
import json

import numpy as np
import zstandard

from capstan_api import preparation
from capstan_trainer import storage
from capstan_trainer.prepare import runs, sample
from capstan_trainer.prepare.stages import mapper
from capstan_trainer.prepare.work import Context, Progress, markers, write_marker


def pairs_name(task: int) -> str:
    return f"pairs-{task:03d}.npy"


def run(ctx: Context) -> dict:
    maps = markers(ctx, "map")
    tasks = [t for t in range(preparation.dedup_tasks(ctx.spec)) if t % ctx.workers == ctx.index]
    found: dict[str, int] = {}
    with Progress(ctx) as progress:
        for t in tasks:
            readers = [
                runs.RunReader(ctx.path("map", mapper.run_name(p, r)), t, n)
                for p, m in enumerate(maps)
                for r, n in enumerate(m["runs"])
            ]
            pairs = []
            for batch in runs.merged(readers):
                pairs.append(runs.duplicate_pairs(batch))
                progress.documents_in += len(batch)
                progress.documents_out += len(pairs[-1])
            out = np.concatenate(pairs) if pairs else np.zeros((0, 4), np.uint64)
            buf = io.BytesIO()
            np.save(buf, out)
            storage.write_bytes(ctx.path("dedup", pairs_name(t)), buf.getvalue())
            found[str(t)] = len(out)
        sampled = 0
        if not ctx.spec.tokenizer.uri:
            cut = sample_cutoff(ctx, len(maps))
            for p in range(ctx.index, len(maps), ctx.workers):
                sampled += extract_sample(ctx, p, cut)
    body = {"pairs": found, "sampleDocuments": sampled}
    write_marker(ctx, body)
    return body


def sample_cutoff(ctx: Context, parts: int) -> int:
    hist = np.zeros(sample.BINS, dtype=np.uint64)
    for p in range(parts):
        hist += np.load(io.BytesIO(storage.read_bytes(ctx.path("map", mapper.hist_name(p)))))
    return sample.cutoff(hist, ctx.spec.tokenizer.sample_bytes)


def extract_sample(ctx: Context, part: int, cut: int) -> int:
    """Part `part`'s candidates below the global cut-off, in id order; returns how many."""
    n = 0
    with storage.open_write(ctx.path("dedup", mapper.sample_name(part))) as raw:
        out = zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False)
        for line in mapper.read_docs(ctx.path("map", mapper.sample_name(part))):
            if sample.bin_of(json.loads(line)["draw"]) < cut:
                out.write(line)
                n += 1
        out.flush(zstandard.FLUSH_FRAME)
    return n
