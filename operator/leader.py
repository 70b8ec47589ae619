"""Leader election on a coordination.k8s.io Lease, after client-go's leaderelection: the holder
renews it every RETRY_S; another replica takes it once it has not been renewed for LEASE_S. Only
the leader's workers reconcile (`Controller.leading`); a leader that cannot renew within
RENEW_DEADLINE_S stops leading and the process exits, so two replicas never reconcile at once
(the one that lost may still be mid-reconcile; exiting bounds that to one reconcile).

kopf runs standalone in every replica (it only enqueues and stores nothing on objects), so a
standby's queue and body cache are warm and it takes over without a new listing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes.client.exceptions import ApiException

from capstan_operator import kube

LEASE_NAME = "capstan-operator"
LEASE_S = 15
RENEW_DEADLINE_S = 10.0
RETRY_S = 2.0
log = logging.getLogger("capstan.leader")


def _micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(s: str | None) -> datetime | None:
    if not s:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(s, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def desired_lease(lease: dict | None, namespace: str, identity: str, now: datetime) -> dict | None:
    """The Lease to write to lead (a new one, a renewal, or a takeover of an expired one), or
    None while another holder's lease is current. Pure."""
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    renewed = _parse(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds") or LEASE_S
    if holder and holder != identity and renewed and (now - renewed).total_seconds() < duration:
        return None
    mine = holder == identity
    new_spec = {
        "holderIdentity": identity,
        "leaseDurationSeconds": LEASE_S,
        "acquireTime": spec.get("acquireTime") if mine else _micro(now),
        "renewTime": _micro(now),
        "leaseTransitions": (spec.get("leaseTransitions") or 0) + (0 if mine or not holder else 1),
    }
    meta = {"name": LEASE_NAME, "namespace": namespace}
    if lease is not None:
        meta["resourceVersion"] = lease["metadata"]["resourceVersion"]  # a lost race is a 409
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": new_spec}


class LeaderElector:
    def __init__(self, namespace: str, identity: str, leading: threading.Event, on_lost: Callable[[], None]):
        self.namespace, self.identity = namespace, identity
        self.leading, self.on_lost = leading, on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop, and hand the lease back when holding it so a standby takes over at once."""
        self._stop.set()
        self._thread.join(RETRY_S + kube.REQUEST_TIMEOUT[1])
        if self.leading.is_set():
            self.leading.clear()
            try:
                lease = kube.get("coordination.k8s.io/v1", "Lease", self.namespace, LEASE_NAME)
                if lease and lease["spec"].get("holderIdentity") == self.identity:
                    lease["spec"]["holderIdentity"] = ""
                    kube.replace(lease)
            except Exception as exc:  # it expires on its own within LEASE_S
                log.warning("could not release the lease: %s", exc)

    def try_lead(self) -> bool:
        """One attempt to acquire or renew; True when this replica holds the lease now."""
        try:
            lease = kube.get("coordination.k8s.io/v1", "Lease", self.namespace, LEASE_NAME)
            want = desired_lease(lease, self.namespace, self.identity, datetime.now(UTC))
            if want is None:
                return False
            kube.replace(want) if lease is not None else kube.create(want)
            return True
        except ApiException as exc:
            if exc.status == 409:  # another replica wrote it first
                return False
            log.warning("leader election: %s %s", exc.status, exc.reason)
            return False
        except Exception as exc:  # a timeout or a dropped connection: retried next period
            log.warning("leader election: %s", exc)
            return False

    def _run(self) -> None:
        last_renewal = 0.0
        while not self._stop.is_set():
            if self.try_lead():
                last_renewal = time.monotonic()
                if not self.leading.is_set():
                    log.info("leading as %s (Lease %s/%s)", self.identity, self.namespace, LEASE_NAME)
                    self.leading.set()
            elif self.leading.is_set() and time.monotonic() - last_renewal > RENEW_DEADLINE_S:
                log.error("lost the lease %s/%s; stopping", self.namespace, LEASE_NAME)
                self.leading.clear()
                self.on_lost()
                return
            self._stop.wait(RETRY_S)
