"""Validation-loss bookkeeping: early stopping with patience, and the overfitting signal."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    overfitting: bool
    """overfitting: validation loss rose since the last evaluation while the mean training loss
    over the same interval fell (the model is memorising the training split)."""
    evals_without_improvement: int
    stop: bool
    """stop: `patience` evaluations in a row did not beat the best by more than min_delta."""


class ValidationWatch:
    """Feed it each evaluation; it says whether to stop and whether the run is overfitting."""

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta
        self.best = math.inf
        self.bad = 0
        self._prev: tuple[float, float | None] | None = None  # (eval loss, train loss) last time

    def observe(self, eval_loss: float, train_loss: float | None) -> Verdict:
        """`train_loss`: mean training loss since the previous evaluation (None if unknown)."""
        overfit = False
        if self._prev is not None and train_loss is not None and self._prev[1] is not None:
            overfit = eval_loss > self._prev[0] and train_loss < self._prev[1]
        if eval_loss < self.best - self.min_delta:
            self.best, self.bad = eval_loss, 0
        else:
            self.bad += 1
        self._prev = (eval_loss, train_loss)
        return Verdict(overfit, self.bad, bool(self.patience) and self.bad >= self.patience)
