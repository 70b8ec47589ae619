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
from capstan_operator import kube, metrics
from capstan_operator.config import OperatorConfig
from capstan_operator.status import Outcome
from capstan_operator.workqueue import WorkQueue

Reconcile = Callable[[dict, OperatorConfig], Outcome]
Key = tuple[str, str, str]  # (kind, namespace, name)
COMPONENT = "capstan-operator"
MAX_BACKOFF_S = 60.0
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
        self.config = config
        self.queue = WorkQueue()
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
        for t in self._threads:
            t.join(timeout)

    def _work(self) -> None:
        me = threading.current_thread().name
        while (key := self.queue.get()) is not None:
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
            with metrics.observe(kind):
                body = self.body(key)
                if body is None:
                    self.forget(*key)
                    return
                out = self.reconcilers[kind](body, self.config)
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
        except Exception:
            # Back off exponentially per key; the reconcilers are level-based, so a retry is safe.
            n = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(MAX_BACKOFF_S, 0.5 * 2**n)
            log.exception("reconcile of %s %s/%s failed (attempt %d); retrying in %.0f s", *key, n, delay)
            self.queue.add(key, delay)
            return
        self._failures.pop(key, None)
        if out.requeue_after is not None:
            self.queue.add(key, out.requeue_after)


def _older(a: dict, b: dict) -> bool:
    """True when `a` is an older version of the object than `b`. resourceVersions are opaque to
    clients in principle, but are etcd revisions (integers) in every API server; anything else
    counts as newer, which at worst costs one reconcile on a stale body."""
    try:
        return int(a["metadata"]["resourceVersion"]) < int(b["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False
