"""Validation-loss bookkeeping: early stopping with patience, and the overfitting signal.

The state travels in checkpoints (`to_json` / `load_json`), so a resumed run stops at the same
step, and flags overfitting at the same evaluations, as an uninterrupted one."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    train_loss: float | None
    """train_loss: mean training loss recorded since the previous evaluation (None if none was)."""
    overfitting: bool
    """overfitting: validation loss rose since the previous evaluation while the mean training
    loss over the same interval fell (the model is memorising the training split)."""
    evals_without_improvement: int
    stop: bool
    """stop: `patience` evaluations in a row did not beat the best by more than min_delta."""


class ValidationWatch:
    """Feed it training losses and each evaluation; it says whether to stop and whether the run
    is overfitting. patience 0 never stops."""

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta
        self.best = math.inf
        self.bad = 0
        self.prev: tuple[float, float | None] | None = None  # (eval loss, train loss) last time
        self.train: list[float] = []  # training losses since the last evaluation

    def record_train(self, loss: float) -> None:
        self.train.append(loss)

    def observe(self, eval_loss: float) -> Verdict:
        train = sum(self.train) / len(self.train) if self.train else None
        overfit = False
        if self.prev is not None and train is not None and self.prev[1] is not None:
            overfit = eval_loss > self.prev[0] and train < self.prev[1]
        if eval_loss < self.best - self.min_delta:
            self.best, self.bad = eval_loss, 0
        else:
            self.bad += 1
        self.prev, self.train = (eval_loss, train), []
        return Verdict(train, overfit, self.bad, bool(self.patience) and self.bad >= self.patience)

    def to_json(self) -> str:
        return json.dumps({"best": self.best, "bad": self.bad, "prev": self.prev, "train": self.train})

    def load_json(self, text: str) -> None:
        d = json.loads(text)
        self.best, self.bad, self.train = d["best"], d["bad"], d["train"]
        self.prev = tuple(d["prev"]) if d["prev"] is not None else None
