"""Replay's first-exposure search: walking the loader's order backwards (`replay.first_exposure`,
one inverse permutation per removed window and pass) against scanning it forwards (every
sequence trained, `SequenceOrder.locate`, what a first version did), in the same run.

    .venv/bin/python bench/replay_exposure.py [--steps 2000] [--batch 64] [--windows 200000]

A single source of `windows` training sequences and a removed document of ~600 tokens (20
consecutive windows of 32 tokens) the run read (the scan stops at its first exposure), then a
short one (3 windows) it never read (the scan covers every sequence trained: the common case of
a run shorter than an epoch); prints both times and the ratio for each.
"""

from __future__ import annotations

import argparse
import time

from capstan_trainer.train import loader, replay


def forward(order: loader.SequenceOrder, touched: set[int], batch: int, steps: int) -> int | None:
    for g in range(steps * batch):
        if order.locate(g)[1] in touched:
            return g // batch
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64, help="sequences per step")
    ap.add_argument("--windows", type=int, default=200_000, help="training sequences in the source")
    a = ap.parse_args()
    order = loader.SequenceOrder([a.windows], [1.0], ["bench"], 7)
    trained = a.steps * a.batch
    read = {order.locate(g)[1] for g in range(trained)}
    unread = next(w for w in range(a.windows - 3) if not read & set(range(w, w + 3)))
    never = set(range(unread, unread + 3))  # a short document (~100 tokens) the run never reached
    for what, touched in (("read", set(range(a.windows // 2, a.windows // 2 + 20))), ("never read", never)):
        t0 = time.perf_counter()
        fast = replay.first_exposure(order, [touched], a.batch, a.steps)
        t1 = time.perf_counter()
        slow = forward(order, touched, a.batch, a.steps)
        t2 = time.perf_counter()
        assert fast == slow, (what, fast, slow)
        print(
            f"{what}: first exposure {fast} ({a.steps} steps x {a.batch} sequences, {a.windows} windows): "
            f"backwards {t1 - t0:.4f} s, forward scan {t2 - t1:.2f} s, ratio {(t2 - t1) / max(t1 - t0, 1e-9):.0f}x"
        )


if __name__ == "__main__":
    main()
