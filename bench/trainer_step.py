"""Trainer step throughput on CPU vs a minimal plain PyTorch loop (goal: ratio >= 0.9).

    .venv/bin/python bench/trainer_step.py [--threads 1] [--rounds 12] [--with-fsdp] [--profile]

Both sides train the same model (same shape, same initial weights) on the same batch with the
same thread count: the trainer side is what `capstan_trainer.train` runs (model built by
`build_model` in a one-process gloo group, `build_optimizer`, `train_step` with clipping); the
baseline is forward, cross-entropy, backward, clip, AdamW step, zero_grad on a plain module.
Rounds alternate between the sides so that load from other processes hits them alike; the
figure is the best round of each (the least disturbed; the median is printed beside it).
Ratio = trainer tokens/s / plain tokens/s. `--with-fsdp` adds a third side: the same step with
FSDP2 wrapped at world size 1, which the trainer skips since it measured 0.46-0.83 of plain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.trainer_common import one_process_group  # noqa: E402
from capstan_api.trainingrun import TrainingRunSpec
from capstan_trainer.model import Transformer  # noqa: E402
from capstan_trainer.train import parallel
from capstan_trainer.train.config import model_config
from capstan_trainer.train.step import build_model, build_optimizer, train_step

# Big enough that compute, not Python overhead, dominates; small enough for a shared 2-core box.
MODEL = {"preset": "test", "dim": 256, "nLayers": 4, "nHeads": 8, "nKvHeads": 4, "ffnDim": 768}
VOCAB, SEQ, MICRO = 4096, 64, 8


def spec() -> TrainingRunSpec:
    return TrainingRunSpec.model_validate(
        {
            "datasets": [{"uri": "file:///unused"}],
            "model": MODEL,
            "optimizer": {
                "globalBatchTokens": SEQ * MICRO,
                "microBatch": MICRO,
                "seqLen": SEQ,
                "warmupSteps": 0,
                "totalSteps": 10,
                "seed": 1,
            },
        }
    )


def plain_step(model, optimizer, x, y, clip: float) -> None:
    logits = model(x)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps", type=int, default=1, help="steps per round and side")
    p.add_argument("--profile", action="store_true", help="print the top ops of the trainer step")
    p.add_argument("--with-fsdp", action="store_true", help="also time FSDP2 at world size 1")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    with one_process_group():
        run(a)


def run(a) -> None:
    mesh = init_device_mesh("cpu", (1,))
    sp = spec()
    cfg = model_config(sp, VOCAB)
    device = torch.device("cpu")

    ours, _ = build_model(cfg, sp.optimizer, sp.fsdp, mesh, device)
    ours_opt = build_optimizer(ours, sp.optimizer)
    plain = Transformer(cfg)
    plain.init_weights(seed=sp.optimizer.seed)
    plain_opt = build_optimizer(plain, sp.optimizer)
    clip = sp.optimizer.grad_clip

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (MICRO, SEQ + 1), generator=gen)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def trainer() -> None:
        train_step(ours, ours_opt, [(x, y)], 1, clip, device)

    def baseline() -> None:
        plain_step(plain, plain_opt, x, y, clip)

    sides = {"trainer step": trainer, "plain loop": baseline}
    if a.with_fsdp:
        with torch.device("meta"):
            wrapped = Transformer(cfg)
        parallel.apply_fsdp(wrapped, mesh, torch.float32, torch.float32, True)
        wrapped.to_empty(device=device)
        wrapped.init_weights(seed=sp.optimizer.seed)
        wrapped_opt = build_optimizer(wrapped, sp.optimizer)
        sides["FSDP2 at world 1"] = lambda: train_step(wrapped, wrapped_opt, [(x, y)], 1, clip, device)

    for fn in sides.values():  # warm-up: allocator, optimizer state
        timed(fn, 2)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, fn in sides.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                timed(fn, 3)
            print(name)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))

    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(a.rounds):
        for name, fn in sides.items():
            times[name].append(timed(fn, a.steps))
    tok = MICRO * SEQ
    print(f"model {cfg.num_params() / 1e6:.2f}M parameters, batch {MICRO} x {SEQ}, {a.threads} thread(s)")
    for name, ts in times.items():
        best, med = min(ts), statistics.median(ts)
        print(f"{name:17s} best {best * 1e3:7.1f} ms = {tok / best:7.0f} tokens/s (median {tok / med:.0f})")
    plain_best = min(times["plain loop"])
    for name in sides:
        if name != "plain loop":
            print(f"ratio {name} / plain loop tokens/s: {plain_best / min(times[name]):.3f}")


if __name__ == "__main__":
    main()
