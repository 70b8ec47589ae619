"""The reconcile work queue: one entry per key, earliest due time wins, no key twice at once."""

from __future__ import annotations

import threading

from capstan_operator.workqueue import WorkQueue


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_key_is_queued_once_and_the_earliest_due_time_wins():
    clock = Clock()
    q = WorkQueue(clock)
    q.add("a", 10)
    q.add("a", 5)
    q.add("a", 30)
    assert len(q) == 1
    clock.t += 5
    assert q.get() == "a"
    assert len(q) == 0


def test_keys_come_out_in_due_order():
    q = WorkQueue()
    q.add("late", 0.2)
    q.add("now")
    assert q.get() == "now"
    assert q.get() == "late"


def test_a_key_added_while_running_runs_again_after_done():
    q = WorkQueue()
    q.add("a")
    assert q.get() == "a"
    q.add("a")
    assert len(q) == 0, "not handed to a second worker while the first still runs it"
    q.done("a")
    assert q.get() == "a"


def test_forget_drops_a_queued_key_and_shutdown_releases_waiters():
    q = WorkQueue()
    q.add("gone", 0.05)
    q.forget("gone")
    got: list = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    t.join(0.3)
    assert t.is_alive(), "a forgotten key must not be handed out"
    q.shutdown()
    t.join(5)
    assert not t.is_alive() and got == [None]
