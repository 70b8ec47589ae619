"""Checkpoint cost: how long a save blocks training vs how long persisting it takes, and how long
loading it back takes, local and S3.

    .venv/bin/python bench/trainer_checkpoint.py [--dim 512] [--layers 8] [--saves 3]

The state is what the trainer saves (model + AdamW moments + scheduler + loader cursor + RNG,
from `step.state_for`) in a one-process gloo group, written by `checkpoint.Checkpointer`:
blocking = until `save` returns (DCP stages the state to CPU memory); total = until the COMMITTED
marker is written. Ratio = blocking / total: the share of the persist time training waits for.
load = `checkpoint.load_state` of the newest step into the same state (what a restart does).
S3 is SeaweedFS on loopback; S3/local compares the persist and load times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.trainer_common import one_process_group, s3_bucket  # noqa: E402
from capstan_trainer import checkpoint  # noqa: E402
from capstan_trainer.model import Transformer, preset  # noqa: E402
from capstan_trainer.train.step import state_for
from capstan_trainer.train.stopping import ValidationWatch


def measure(root: str, model, optimizer, saves: int) -> tuple[float, float, float, float]:
    """Medians over `saves` saves and as many loads: (blocking s, total s, load s), and the
    checkpoint's size in bytes."""
    ck = checkpoint.Checkpointer(root, keep_last=2, rank=0, process_group=checkpoint.new_checkpoint_group())
    for step in range(1, saves + 1):
        ck.save(
            step,
            state_for(model, optimizer, step, step * 8, ValidationWatch(0, 0.0)),
            {"model": model.cfg.to_dict()},
            None,
        )
        ck.wait()
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    size += sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values())
    blocked = statistics.median(t["blockingSeconds"] for t in ck.timings)
    total = statistics.median(t["totalSeconds"] for t in ck.timings)
    loads = []
    for _ in range(saves):
        state = state_for(model, optimizer, 0, 0, ValidationWatch(0, 0.0))
        t0 = time.perf_counter()
        checkpoint.load_state(ck.last_committed.uri, state)
        loads.append(time.perf_counter() - t0)
    return blocked, total, statistics.median(loads), size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--saves", type=int, default=3)
    a = p.parse_args()
    with one_process_group():
        run(a)


def run(a) -> None:
    cfg = preset(
        "test", dim=a.dim, n_layers=a.layers, n_heads=8, n_kv_heads=4, ffn_dim=a.dim * 3, vocab_size=8192
    )
    model = Transformer(cfg)
    model.init_weights(seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (2, 33))
    F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
    optimizer.step()  # creates the AdamW moments the checkpoint carries

    with s3_bucket() as bucket, tempfile.TemporaryDirectory() as tmp:
        results = {
            "local": measure(f"file://{tmp}/ck", model, optimizer, a.saves),
            "S3 (SeaweedFS)": measure(f"{bucket}/ck", model, optimizer, a.saves),
        }
    size = results["local"][3]
    print(
        f"model {cfg.num_params() / 1e6:.1f}M parameters; checkpoint {size / 2**20:.0f} MiB; median of {a.saves}"
    )
    mib = size / 2**20
    for where, (blocked, total, load, _) in results.items():
        print(
            f"{where:14s} blocking {blocked:.3f} s, total persist {total:.3f} s ({mib / total:.0f} MiB/s), "
            f"load {load:.3f} s ({mib / load:.0f} MiB/s); ratio blocking/total {blocked / total:.3f}"
        )
    (_, local_total, local_load, _), (_, s3_total, s3_load, _) = results.values()
    print(f"S3/local time: persist {s3_total / local_total:.2f}x, load {s3_load / local_load:.2f}x")


if __name__ == "__main__":
    main()
