"""The training loader alone: tokens/s reading from S3 (SeaweedFS on loopback) vs local files.

    .venv/bin/python bench/trainer_loader.py [--tokens 4000000] [--seq-len 1024] [--micro 8] [--steps 120]
                                             [--step-ms 15]

The same generated dataset (uint16 shards of 256Ki tokens) is written to a local folder and to a
bucket; `TrainLoader` (ranged reads of random windows, background prefetch) then serves the same
sequence of batches from each. Ratio = S3 tokens/s / local tokens/s, twice: to a consumer that
takes the batches as fast as it can (the loader alone), and to one that spends --step-ms per
micro-batch asleep, standing in for an accelerator step that leaves the CPU to the prefetch
thread (training's case: prefetch hides the reads while storage keeps up). The run also times the
same ranged reads without the loader: loader/raw says what the loader itself costs on top of
storage, and the client CPU per ranged GET (boto signing and parsing) is what bounds S3 here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.trainer_common import s3_bucket  # noqa: E402
from capstan_trainer import shards, synthetic
from capstan_trainer.train import loader


def open_train(uri: str, seq_len: int) -> tuple[loader.Split, loader.SequenceOrder]:
    manifest = shards.read_manifest(f"{uri}/manifest.json")
    split = loader.open_split(f"{uri}/manifest.json", manifest, "train")
    return split, loader.SequenceOrder([split.windows(seq_len)], [1.0], [manifest.fingerprint], seed=1)


def raw_reads(uri: str, seq_len: int, micro: int, steps: int) -> tuple[float, float]:
    """Storage alone: the same ranged reads, one `cat_ranges` per batch, no loader around them.
    Returns tokens/s and this process's CPU seconds per ranged GET."""
    split, order = open_train(uri, seq_len)
    gets = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        windows = [order.locate(g)[1] for g in range(step * micro, (step + 1) * micro)]
        ranges = [r for w in windows for r in split.ranges(w * seq_len, seq_len + 1)]
        split.fs.cat_ranges([p for p, _, _ in ranges], [a for _, a, _ in ranges], [b for _, _, b in ranges])
        gets += len(ranges)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return steps * micro * seq_len / elapsed, cpu / gets


def tokens_per_second(uri: str, seq_len: int, micro: int, steps: int, step_s: float = 0.0) -> float:
    """Tokens/s the loader hands to a consumer that sleeps `step_s` per micro-batch."""
    split, order = open_train(uri, seq_len)
    data = loader.TrainLoader([split], order, seq_len, micro, micro, rank=0, world=1)
    try:
        for _ in data.step_batches():  # first batch: connection set-up, thread start
            pass
        t0 = time.perf_counter()
        for _ in range(steps):
            for _batch in data.step_batches():
                time.sleep(step_s)
        elapsed = time.perf_counter() - t0
    finally:
        data.close()
    return steps * micro * seq_len / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=4_000_000)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument(
        "--step-ms", type=float, default=15.0, help="the stand-in accelerator step per micro-batch"
    )
    a = p.parse_args()
    step_s = a.step_ms / 1000
    with s3_bucket() as bucket, tempfile.TemporaryDirectory() as tmp:
        local, s3 = f"file://{tmp}/d", f"{bucket}/d"
        for uri in (local, s3):
            synthetic.write_dataset(
                uri, vocab_size=32000, train_tokens=a.tokens, validation_tokens=0, shard_tokens=262_144
            )
        # Alternate to share out the load of other processes; best of three for each.
        runs: dict[str, list] = {"local": [], "s3": [], "s3 raw": [], "local step": [], "s3 step": []}
        for _ in range(3):
            runs["local"].append(tokens_per_second(local, a.seq_len, a.micro, a.steps))
            runs["s3"].append(tokens_per_second(s3, a.seq_len, a.micro, a.steps))
            runs["s3 raw"].append(raw_reads(s3, a.seq_len, a.micro, a.steps))
            runs["local step"].append(tokens_per_second(local, a.seq_len, a.micro, a.steps // 2, step_s))
            runs["s3 step"].append(tokens_per_second(s3, a.seq_len, a.micro, a.steps // 2, step_s))
    loc, rem, (raw, cpu_per_get) = max(runs["local"]), max(runs["s3"]), max(runs["s3 raw"])
    loc_step, rem_step = max(runs["local step"]), max(runs["s3 step"])
    print(
        f"dataset {a.tokens / 1e6:.1f}M tokens (uint16), batches of {a.micro} x {a.seq_len + 1} random windows"
    )
    print(
        f"loader alone:  local files {loc:,.0f} tokens/s, S3 (SeaweedFS) {rem:,.0f}; ratio S3/local {rem / loc:.3f}"
    )
    print(
        f"{a.step_ms:g} ms step per micro-batch: local files {loc_step:,.0f} tokens/s, S3 {rem_step:,.0f}; "
        f"ratio S3/local {rem_step / loc_step:.3f}"
    )
    print(
        f"S3 ranged reads alone (no loader): {raw:,.0f} tokens/s, client CPU {cpu_per_get * 1e3:.2f} ms per GET; "
        f"ratio loader/raw reads {rem / raw:.3f}"
    )


if __name__ == "__main__":
    main()
