"""Canary arithmetic: a step's weight as replica counts, and the step a weight belongs to.
Pure functions.

Replicas follow Argo Rollouts' basic canary (no traffic router): both sides are rounded up, so a
small Deployment still gets a canary pod at 10 % and keeps its stable pod until the canary is
Ready. The Service spreads requests over every Ready pod, so the canary's share of traffic is
its share of Ready pods."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    stable: int
    canary: int


def split(total: int, weight: int, canary_ready: int) -> Split:
    """Replicas of the stable and canary revisions for `weight` percent of `total` serving pods.

    Stable capacity is never reduced before the canary is Ready: stable gives up only as many pods
    as the canary has Ready ones (`canary_ready`)."""
    if not 0 <= weight <= 100:
        raise ValueError(f"canary weight must be 0-100, got {weight}")
    if total <= 0:
        return Split(0, 0)
    canary = math.ceil(total * weight / 100)
    stable_target = math.ceil(total * (100 - weight) / 100)
    stable = min(total, max(stable_target, total - canary_ready))
    return Split(stable, canary)


def step_index(weights: list[int], weight: int) -> int:
    """Index of the step a canary at `weight` is on: the first step at or above it, so a rollout
    whose steps were edited mid-way continues from where it stood (never moving backwards)."""
    return next((i for i, w in enumerate(weights) if w >= weight), len(weights) - 1)
