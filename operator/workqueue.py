"""A keyed delay queue for level-based reconcilers, after client-go's workqueue: a key is queued
at most once (the earliest due time wins), and a key is never processed by two workers at once
(one added while it is being processed runs once more afterwards)."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Hashable


class WorkQueue:
    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._cv = threading.Condition()
        self._due: dict[Hashable, float] = {}  # queued keys -> due time
        self._heap: list[tuple[float, int, Hashable]] = []  # may hold stale entries
        self._seq = itertools.count()
        self._running: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}  # re-added while running -> due time
        self._closed = False

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        due = self._clock() + max(0.0, delay)
        with self._cv:
            if self._closed:
                return
            if key in self._running:
                self._again[key] = min(due, self._again.get(key, due))
                return
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._seq), key))
            self._cv.notify()

    def forget(self, key: Hashable) -> None:
        """Drop a queued key (its object is gone); a running one finishes but is not re-run."""
        with self._cv:
            self._due.pop(key, None)
            self._again.pop(key, None)

    def get(self) -> Hashable | None:
        """Block until a key is due and hand it out; None once the queue is shut down."""
        with self._cv:
            while not self._closed:
                while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # stale: forgotten or moved earlier
                if self._heap:
                    due, _, key = self._heap[0]
                    wait = due - self._clock()
                    if wait <= 0:
                        heapq.heappop(self._heap)
                        del self._due[key]
                        self._running.add(key)
                        return key
                    self._cv.wait(wait)
                else:
                    self._cv.wait()
            return None

    def done(self, key: Hashable) -> None:
        with self._cv:
            self._running.discard(key)
            due = self._again.pop(key, None)
        if due is not None:
            self.add(key, max(0.0, due - self._clock()))

    def __len__(self) -> int:
        with self._cv:
            return len(self._due)

    def shutdown(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
