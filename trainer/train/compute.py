"""Compute used by a run, measured: wall-clock seconds of the trainer processes x their number,
accumulated over restarts through each checkpoint's capstan.json ("compute"), beside the capacity
plan's estimate the operator passes in (the resource's PLANNED_GPU_HOURS_ANNOTATION).

What counts: from this attempt's start (after the process group and the model are up) to each
save, plus what the checkpoint resumed from recorded. Time lost after the last checkpoint of a
failed attempt is not counted: the figure is the compute behind the saved weights."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ComputeMeter:
    world: int
    """world: trainer processes in this attempt."""
    gpu: bool
    """gpu: one GPU per process (CUDA); on CPU the GPU-hours are 0."""
    planned_gpu_hours: float | None = None
    prior_seconds: float = 0.0
    """prior_seconds: process-seconds recorded by the checkpoint this attempt resumed from."""
    since: float = field(default_factory=time.monotonic)

    @staticmethod
    def prior(meta: dict | None) -> float:
        """Process-seconds a checkpoint's capstan.json recorded (0 for one without)."""
        return float(((meta or {}).get("compute") or {}).get("processSeconds", 0.0))

    def to_meta(self, tokens_seen: int) -> dict:
        seconds = self.prior_seconds + self.world * (time.monotonic() - self.since)
        return {
            "processSeconds": round(seconds, 3),
            "processHours": round(seconds / 3600, 6),
            "gpuHours": round(seconds / 3600, 6) if self.gpu else 0.0,
            "device": "cuda" if self.gpu else "cpu",
            "worldSize": self.world,
            "plannedGpuHours": self.planned_gpu_hours,
            "tokensSeen": tokens_seen,
        }
