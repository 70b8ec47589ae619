"""End-to-end preparation throughput: documents/s and MB/s per core, share of time per stage.

    PYTHONPATH=.pypath python bench/prepare_throughput.py [--mb 50]

Baseline in the same run: reading the same files and json-parsing every line (the floor any
JSONL pipeline pays). Ratio = prepare time / baseline time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prepare_common import resource, write_corpus  # noqa: E402
from capstan_trainer.prepare.prepare import main


def baseline(folder: Path) -> float:
    t0 = time.perf_counter()
    for p in sorted(folder.glob("*.jsonl")):
        for line in p.read_text().splitlines():
            json.loads(line)
    return time.perf_counter() - t0


def run(mb: float) -> None:
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        docs, size = write_corpus(root / "in", mb)
        (root / "ds.yaml").write_text(yaml.safe_dump(resource(str(root / "in"), str(root / "out"))))
        base = baseline(root / "in")
        buf = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            assert main(["-f", str(root / "ds.yaml")]) == 0
        wall = time.perf_counter() - t0
        s = json.loads(buf.getvalue())
    secs = s["seconds"]
    total = sum(secs.values())
    print(f"corpus: {docs} documents, {size / 1e6:.1f} MB, {cores} cores")
    print(
        f"prepare: {wall:.1f} s = {docs / wall:.0f} docs/s, {size / 1e6 / wall:.2f} MB/s "
        f"({docs / wall / cores:.0f} docs/s and {size / 1e6 / wall / cores:.2f} MB/s per core)"
    )
    print(
        "share of time per stage: "
        + ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(secs.items(), key=lambda kv: -kv[1]))
    )
    print(
        f"kept {s['documents']['train'] + s['documents']['validation']}, near duplicates {s['nearDuplicates']}, "
        f"tokens {sum(s['tokens'].values())}"
    )
    print(f"baseline (read + json.loads): {base:.2f} s; ratio prepare/baseline = {wall / base:.1f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB (the issue asks for 200)")
    run(ap.parse_args().mb)
