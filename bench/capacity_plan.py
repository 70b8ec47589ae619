"""The capacity plan's memory model (capstan_api.capacity) against torch's measured peak on CPU.

    .venv/bin/python bench/capacity_plan.py [--threads 2] [--case NAME]

Each case runs in a fresh child process (allocators never hand memory back between cases): it
builds the model as the trainer does (`build_model` in a one-process gloo group, fp32 on CPU, so
no FSDP wrapping at world size 1), the AdamW optimizer, and runs two `train_step`s (the first
creates AdamW's moments; the second peaks with weights, moments, gradients and activations).

What is measured, and why: the rise of the process's peak resident set (VmHWM in
/proc/self/status, reset through /proc/self/clear_refs just before the model is built) over the
resident set at that moment. tracemalloc sees only Python's allocator, not torch's tensors (c10
allocates them with posix_memalign), and torch keeps no peak statistics on CPU
(torch.cuda.max_memory_allocated has no CPU counterpart), so the kernel's count is the one that
sees every tensor. It also counts what the plan leaves out on purpose: oneDNN scratch buffers,
thread stacks and malloc's arena slack (the child warms up on a tiny model first, so libtorch's
code pages and thread pools are resident before the count starts), so a measured figure a little above the estimate is the
expected direction. The plan's GPU-only allowance (overheadGiB) is 0 on CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from capstan_api import capacity  # noqa: E402
from capstan_api.trainingrun import TrainingRunSpec  # noqa: E402

MIB = 2**20
# A fixed mmap threshold: glibc otherwise raises it after each large free, and later tensors come
# from the heap, whose freed pages stay resident (the peak would then count the warm-up's too).
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONWARNINGS": "ignore"}

# (name, spec.model, vocab, seqLen, microBatch, activationCheckpointing): small presets and shapes
# where activations dominate and where weights and optimizer state do.
CASES = [
    ("test", {"preset": "test"}, 4096, 256, 8, "none"),
    ("test-ac", {"preset": "test"}, 4096, 256, 8, "full"),
    (
        "mid",
        {"preset": "test", "dim": 512, "nLayers": 8, "nHeads": 8, "nKvHeads": 4, "ffnDim": 1536},
        8192,
        256,
        8,
        "none",
    ),
    (
        "mid-ac",
        {"preset": "test", "dim": 512, "nLayers": 8, "nHeads": 8, "nKvHeads": 4, "ffnDim": 1536},
        8192,
        256,
        8,
        "full",
    ),
    ("125m", {"preset": "125m"}, 32000, 512, 4, "none"),
    ("125m-ac", {"preset": "125m"}, 32000, 512, 4, "full"),
]


def spec(model: dict, vocab: int, seq: int, micro: int, ac: str) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate(
        {
            "datasets": [{"uri": "file:///unused"}],
            "model": {**model, "vocabSize": vocab},
            "optimizer": {
                "globalBatchTokens": seq * micro,
                "microBatch": micro,
                "seqLen": seq,
                "warmupSteps": 0,
                "totalSteps": 10,
                "seed": 1,
            },
            "fsdp": {"activationCheckpointing": ac},
        }
    )


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(case: str, threads: int) -> dict:
    """In the child: the peak RSS rise over two training steps, in bytes."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh

    from bench.trainer_common import one_process_group
    from capstan_trainer.train.config import model_config
    from capstan_trainer.train.step import build_model, build_optimizer, train_step

    torch.set_num_threads(threads)
    _, model, vocab, seq, micro, ac = next(c for c in CASES if c[0] == case)
    s = spec(model, vocab, seq, micro, ac)
    device = torch.device("cpu")
    with one_process_group():
        mesh = init_device_mesh("cpu", (1,))
        cfg = model_config(s, vocab)
        # Warm-up on a tiny model with the same code path: the first step pages in libtorch's code
        # and sets up thread pools, which RSS counts and the plan rightly does not.
        tiny = spec({"preset": "test"}, 256, 16, 1, ac)
        warm, _ = build_model(model_config(tiny, 256), tiny.optimizer, tiny.fsdp, mesh, device)
        t = torch.randint(0, 256, (1, 16))
        train_step(warm, build_optimizer(warm, tiny.optimizer), [(t, t)], 1, 1.0, device)
        del warm, t
        gc.collect()
        x = torch.randint(0, vocab, (micro, seq))
        y = torch.randint(0, vocab, (micro, seq))
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = _status_kib("VmRSS")
        model, _ = build_model(cfg, s.optimizer, s.fsdp, mesh, device)
        opt = build_optimizer(model, s.optimizer)
        for _ in range(2):
            train_step(model, opt, [(x, y)], 1, 1.0, device)
        peak = _status_kib("VmHWM")
    return {"measured": (peak - base) * 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--case", action="append", help="run only these cases (default: all)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.threads)))
        return
    print(
        f"{'case':10} {'params':>11} {'weights+grads+adam':>19} {'activations':>12} {'estimate':>9} {'measured':>9} {'ratio':>6}"
    )
    for name, model, vocab, seq, micro, ac in CASES:
        if args.case and name not in args.case:
            continue
        s = spec(model, vocab, seq, micro, ac)
        cfg = capacity.modelshape.from_spec(s.model, vocab)
        m = capacity.memory_bytes(s, cfg, 1, gpu=False)
        child = [sys.executable, __file__, "--child", name, "--threads", str(args.threads)]
        out = subprocess.run(child, capture_output=True, text=True, env={**os.environ, **CHILD_ENV})
        if out.returncode:
            raise SystemExit(f"{name}: child failed:\n{out.stderr[-3000:]}")
        measured = json.loads(out.stdout.strip().splitlines()[-1])["measured"]
        states = m["parameters"] + m["gradients"] + m["optimizer"]
        print(
            f"{name:10} {cfg.num_params():>11,} {states / MIB:>14.1f} MiB {m['activations'] / MIB:>8.1f} MiB "
            f"{m['total'] / MIB:>5.0f} MiB {measured / MIB:>5.0f} MiB {m['total'] / measured:>6.2f}"
        )


if __name__ == "__main__":
    main()
