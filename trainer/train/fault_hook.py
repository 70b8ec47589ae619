"""A test hook, not a feature: it exists for the tests only (tests/unit/trainer/test_distributed.py)
and does nothing unless CAPSTAN_FAULT_KILL_STEPS is set.

CAPSTAN_FAULT_KILL_STEPS="25" or "15,33": on restart k the last rank SIGKILLs itself right after
finishing the k-th listed step (a real crash torchrun must recover from)."""

from __future__ import annotations

import os
import signal

import torch.distributed as dist


def fault_planned(step: int) -> bool:
    """True after the step this restart (TORCHELASTIC_RESTART_COUNT) is to crash at."""
    plan = os.environ.get("CAPSTAN_FAULT_KILL_STEPS")
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    steps = [int(s) for s in plan.split(",")] if plan else []
    return restart < len(steps) and step == steps[restart]


def inject_fault(rank: int, world: int) -> None:
    """Every rank reaches the barrier, then the last rank SIGKILLs itself."""
    dist.barrier()
    if rank == world - 1:
        os.kill(os.getpid(), signal.SIGKILL)
