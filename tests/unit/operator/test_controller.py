"""The controller's body cache: a reconcile uses the newest body seen (watch or own status write)
instead of a GET, ignores a late watch event older than its own write, and hands reconcilers a
copy they may change."""

from __future__ import annotations

from capstan_operator import kube
from capstan_operator.config import OperatorConfig
from capstan_operator.controller import Controller
from capstan_operator.status import Outcome

KEY = ("TrainingRun", "ns", "r")


def run_body(rv: int, phase: str | None = None) -> dict:
    status = {"phase": phase} if phase else {}
    return {
        "kind": "TrainingRun",
        "metadata": {"name": "r", "namespace": "ns", "resourceVersion": str(rv)},
        "status": status,
    }


def make(monkeypatch, status_after: dict | None = None):
    """A controller whose TrainingRun reconciler records what it saw and asks for phase Running."""
    seen: list[dict] = []
    gets: list[str] = []

    def reconcile(body: dict, cfg: OperatorConfig) -> Outcome:
        seen.append(body)
        body["status"]["scribble"] = True  # a reconciler may change what it is given
        return Outcome(status={"phase": "Running"} if body["status"].get("phase") != "Running" else {})

    def get_custom(plural, namespace, name):
        gets.append(name)
        return None

    def patch_custom_status(plural, namespace, name, status):
        return status_after

    monkeypatch.setattr(kube, "get_custom", get_custom)
    monkeypatch.setattr(kube, "patch_custom_status", patch_custom_status)
    monkeypatch.setattr(kube, "post_event", lambda *a, **k: None)
    return Controller({"TrainingRun": reconcile}, OperatorConfig()), seen, gets


def test_a_reconcile_uses_the_watched_body_and_then_its_own_write(monkeypatch):
    c, seen, gets = make(monkeypatch, status_after=run_body(7, "Running"))
    c.observe(KEY, run_body(5))
    c.process(KEY)
    assert gets == [] and seen[0]["metadata"]["resourceVersion"] == "5"
    c.observe(KEY, run_body(6))  # the watch event of an intermediate version, arriving late
    c.process(KEY)
    assert seen[1]["metadata"]["resourceVersion"] == "7", "the status write's response is newer"
    assert "scribble" not in c.body(KEY)["status"], "the cache is not changed by reconcilers"
    c.observe(KEY, run_body(9))
    assert c.body(KEY)["metadata"]["resourceVersion"] == "9"


def test_without_a_cached_body_it_gets_and_forgets_a_deleted_resource(monkeypatch):
    c, seen, gets = make(monkeypatch)
    c.enqueue(*KEY)
    c.process(KEY)
    assert gets == ["r"] and seen == []
    c.observe(KEY, run_body(3))
    c.forget(*KEY)  # DELETED
    c.process(KEY)
    assert gets == ["r", "r"] and seen == []


def test_liveness_fails_while_a_reconcile_is_stuck_and_recovers(monkeypatch):
    import threading
    import time

    import pytest

    from capstan_operator import controller as ctl

    now = [1000.0]
    release, entered = threading.Event(), threading.Event()

    def reconcile(body: dict, cfg: OperatorConfig) -> Outcome:
        entered.set()
        assert release.wait(60), "the test never released the reconcile"
        return Outcome()

    c = Controller({"TrainingRun": reconcile}, OperatorConfig(), workers=1, clock=lambda: now[0])
    c.observe(KEY, run_body(1))
    c.start()
    try:
        c.enqueue(*KEY)
        assert entered.wait(30), "the worker never started the reconcile"
        assert c.health()["busy"] == 1
        now[0] += ctl.STALL_S + 1
        with pytest.raises(RuntimeError, match="stuck \\['TrainingRun ns/r for 301 s'\\]"):
            c.health()
        release.set()
        deadline = time.monotonic() + 30
        while c._busy:
            assert time.monotonic() < deadline, "the worker did not finish the released reconcile"
            time.sleep(0.01)
        assert c.health() == {"queued": 0, "busy": 0, "workers": 1}
    finally:
        release.set()
        c.stop()
