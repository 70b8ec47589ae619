"""Shared corpus generation for the prepare benchmarks: generated documents written as JSONL."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.unit.prepare import corpus


def write_corpus(folder: Path, megabytes: float, seed: int = 0, dup_every: int = 20) -> tuple[int, int]:
    """~`megabytes` of JSONL in 8 files, every `dup_every`-th document a near copy; (documents, bytes)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    target, total, docs = int(megabytes * 1e6), 0, 0
    files = [open(folder / f"part-{i:03d}.jsonl", "w") for i in range(8)]  # noqa: SIM115
    prev = ""
    while total < target:
        text = corpus.near_copy(rng, prev, 0.9) if docs % dup_every == dup_every - 1 else corpus.good_doc(rng)
        prev = text
        line = json.dumps({"text": text, "url": f"https://example.org/{docs}"}) + "\n"
        files[docs % 8].write(line)
        total += len(line)
        docs += 1
    for f in files:
        f.close()
    return docs, total


def resource(src: str, out: str, **spec) -> dict:
    s = {
        "sources": [{"uri": src, "licence": "CC-BY-4.0"}],
        "tokenizer": {"vocabSize": 8192},
        "output": {"uri": out, "validationFraction": 0.01},
        **spec,
    }
    return {"apiVersion": "capstan.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "bench"}, "spec": s}
