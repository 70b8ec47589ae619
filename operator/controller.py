"""The reconcile loop: kopf watches and calls `enqueue`; worker threads run each kind's
level-based `reconcile(body, config) -> Outcome`, write the status patch, record the Events and
requeue when asked. Like controller-runtime, and unlike kopf's per-handler retries, nothing is
stored on the object (no finalizers, no progress annotations): after a restart the first listing
enqueues every object and the reconcilers read the world again."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable

from capstan_api import KINDS
from capstan_operator import kube, metrics, objectstore
from capstan_operator.config import OperatorConfig
from capstan_operator.status import Outcome, StatusDraft
from capstan_operator.workqueue import WorkQueue

Reconcile = Callable[[dict, OperatorConfig], Outcome]
Key = tuple[str, str, str]  # (kind, namespace, name)
COMPONENT = "capstan-operator"
MAX_BACKOFF_S = 60.0
STORAGE_READABLE = "StorageReadable"
"""STORAGE_READABLE: False while a status file the operator reads (progress.json, manifest.json,
status.json) exists but cannot be read or parsed; the message says which and why."""
STALL_S = 300.0
"""STALL_S: a reconcile running longer than this means its worker is stuck (every API call times
out well before: kube.REQUEST_TIMEOUT), and liveness fails so the pod is restarted."""
log = logging.getLogger("capstan.controller")


class Controller:
    def __init__(
        self,
        reconcilers: dict[str, Reconcile],
        config: OperatorConfig,
        workers: int = 4,
        clock=time.monotonic,
    ):
        self.reconcilers = reconcilers
        self._clock = clock
        self._busy: dict[str, tuple[Key, float]] = {}  # worker thread -> (key, since)
        # Workers take keys only while this is set: always when standalone, else while this
        # replica holds the lease (leader.py). A standby still fills its queue and cache.
        self.leading = threading.Event()
        if not config.leader_election:
            self.leading.set()
        self.config = config
        self.queue = WorkQueue()
        metrics.track_depth(self.queue.__len__)
        self.workers = workers
        self._failures: dict[Key, int] = {}
        self._threads: list[threading.Thread] = []
        # The newest body of each resource, from the watch and from our own status writes (an
        # informer's cache): a reconcile then needs no GET of its own resource.
        self._bodies: dict[Key, dict] = {}
        self._bodies_lock = threading.Lock()

    def enqueue(self, kind: str, namespace: str, name: str, delay: float = 0.0) -> None:
        if kind in self.reconcilers:
            self.queue.add((kind, namespace, name), delay)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self.queue.forget((kind, namespace, name))
        self._failures.pop((kind, namespace, name), None)
        with self._bodies_lock:
            self._bodies.pop((kind, namespace, name), None)

    def observe(self, key: Key, body: dict) -> None:
        """Remember `body` unless a newer version of it is already known (a watch event can
        arrive after the response of our own status write)."""
        with self._bodies_lock:
            old = self._bodies.get(key)
            if old is None or not _older(body, old):
                self._bodies[key] = body

    def body(self, key: Key) -> dict | None:
        """The newest known body (a copy: reconcilers may change what they are given), else a GET."""
        with self._bodies_lock:
            cached = self._bodies.get(key)
        if cached is not None:
            return copy.deepcopy(cached)
        kind, namespace, name = key
        body = kube.get_custom(KINDS[kind].plural, namespace, name)
        if body is not None:
            self.observe(key, body)
        return body

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self.queue.shutdown()
        self.leading.set()  # wakes standby workers, which then find the queue shut down
        for t in self._threads:
            t.join(timeout)

    def _work(self) -> None:
        me = threading.current_thread().name
        while self.leading.wait() and (key := self.queue.get()) is not None:
            if not self.leading.is_set():  # lost the lease while waiting: leave it queued
                self.queue.done(key)
                self.queue.add(key)
                continue
            self._busy[me] = (key, self._clock())
            try:
                self.process(key)
            finally:
                self._busy.pop(me, None)
                self.queue.done(key)

    def health(self) -> dict:
        """Liveness (kopf's /healthz probe): raises when a worker thread died or one reconcile has
        run for more than STALL_S, so the kubelet restarts a wedged operator."""
        dead = [t.name for t in self._threads if not t.is_alive()]
        now = self._clock()
        stuck = [
            f"{k[0]} {k[1]}/{k[2]} for {now - t0:.0f} s"
            for k, t0 in list(self._busy.values())
            if now - t0 > STALL_S
        ]
        if dead or stuck:
            raise RuntimeError(f"workers not making progress: dead {dead}, stuck {stuck}")
        return {"queued": len(self.queue), "busy": len(self._busy), "workers": len(self._threads)}

    def process(self, key: Key) -> None:
        kind, namespace, name = key
        plural = KINDS[kind].plural
        try:
            with metrics.observe(kind) as result:
                body = self.body(key)
                if body is None:
                    self.forget(*key)
                    return
                out = self.reconcilers[kind](body, self.config)
                if out.requeue_after is not None:
                    result["outcome"] = "requeue"
                if out.status:
                    written = kube.patch_custom_status(plural, namespace, name, out.status)
                    if written is None:  # deleted meanwhile
                        self.forget(*key)
                        return
                    self.observe(key, written)
                    if "phase" in out.status:
                        log.info(
                            "%s %s/%s is %s: %s",
                            kind,
                            namespace,
                            name,
                            out.status["phase"],
                            out.status.get("message", ""),
                        )
                for type_, reason, message in out.events:
                    kube.post_event(body, type_, reason, message, COMPONENT)
                self._storage_recovered(key)
        except (objectstore.Refused, objectstore.Unreadable) as exc:
            # Retrying at once cannot help: say so in status, and look again slowly (a 403 or a
            # half-written file may be fixed; a refused URI needs a spec change, a new generation).
            self._storage_problem(key, body, exc)
            return
        except Exception:
            # Back off exponentially per key; the reconcilers are level-based, so a retry is safe.
            n = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(MAX_BACKOFF_S, 0.5 * 2**n)
            log.exception("reconcile of %s %s/%s failed (attempt %d); retrying in %.0f s", *key, n, delay)
            metrics.RETRIES.labels(metrics.QUEUE).inc()
            self.queue.add(key, delay)
            return
        self._failures.pop(key, None)
        if out.requeue_after is not None:
            self.queue.add(key, out.requeue_after)

    def _storage_recovered(self, key: Key) -> None:
        """A reconcile went through: drop a StorageReadable=False condition left from before."""
        body = self.body(key) or {}
        if not any(
            c.get("type") == STORAGE_READABLE for c in (body.get("status") or {}).get("conditions") or []
        ):
            return
        patch = StatusDraft(body).clear(STORAGE_READABLE).outcome().status
        written = kube.patch_custom_status(KINDS[key[0]].plural, key[1], key[2], patch) if patch else None
        if written is not None:
            self.observe(key, written)

    def _storage_problem(self, key: Key, body: dict, exc: Exception) -> None:
        kind, namespace, name = key
        draft = StatusDraft(body)
        if isinstance(exc, objectstore.Refused):
            draft.fail("URINotAllowed", str(exc))
            delay = None
        else:
            draft.condition(STORAGE_READABLE, "False", "Unreadable", str(exc))
            delay = MAX_BACKOFF_S
        out = draft.outcome(delay)
        log.warning("%s %s/%s: %s", kind, namespace, name, exc)
        try:
            if out.status:
                written = kube.patch_custom_status(KINDS[kind].plural, namespace, name, out.status)
                if written is not None:
                    self.observe(key, written)
            for type_, reason, message in out.events:
                kube.post_event(body, type_, reason, message, COMPONENT)
        except Exception:
            log.exception("could not record the storage problem of %s %s/%s", *key)
        self._failures.pop(key, None)
        if delay is not None:
            self.queue.add(key, delay)


def _older(a: dict, b: dict) -> bool:
    """True when `a` is an older version of the object than `b`. resourceVersions are opaque to
    clients in principle, but are etcd revisions (integers) in every API server; anything else
    counts as newer, which at worst costs one reconcile on a stale body."""
    try:
        return int(a["metadata"]["resourceVersion"]) < int(b["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False
