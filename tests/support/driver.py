"""A small stand-in for the kopf runtime in integration tests: call the reconcile functions in a
loop (honouring requeue_after, capped so tests stay brisk), write each status patch to the status
subresource and keep the events, until a condition holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes import client, config

from capstan_api.common import GROUP, VERSION
from capstan_operator import kube
from capstan_operator.config import OperatorConfig
from capstan_operator.status import Outcome

Reconcile = Callable[[dict, OperatorConfig], Outcome]


def use_kubeconfig(path: str) -> None:
    """Point kube.py's shared client at this cluster."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    kube._api_client = client.ApiClient(cfg)


@dataclass
class Driver:
    namespace: str
    cfg: OperatorConfig
    targets: list[tuple[str, str, Reconcile]] = field(default_factory=list)
    """targets are (plural, name, reconcile) driven each round, in order."""
    events: list[tuple[str, str, str, str]] = field(default_factory=list)
    """events are (name, type, reason, message) in the order the reconcilers returned them."""
    max_interval_s: float = 1.0

    def add(self, plural: str, name: str, reconcile: Reconcile) -> Driver:
        self.targets.append((plural, name, reconcile))
        return self

    def get(self, plural: str, name: str) -> dict | None:
        return kube.get_custom(plural, self.namespace, name)

    def step(self) -> float:
        """One round over every target; returns how long to wait before the next."""
        api = client.CustomObjectsApi(kube.api_client())
        wait = self.max_interval_s
        for plural, name, reconcile in self.targets:
            body = self.get(plural, name)
            if body is None:
                continue
            out = reconcile(body, self.cfg)
            if out.status:
                api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, self.namespace, plural, name, {"status": out.status}
                )
            self.events += [(name, *e) for e in out.events]
            if out.requeue_after is not None:
                wait = min(wait, out.requeue_after)
        return max(wait, 0.2)

    def run_until(self, what: str, check: Callable[[], object], timeout: float):
        """Drive until `check()` is truthy; fail naming `what`, the statuses and the events."""
        end = time.monotonic() + timeout
        while True:
            wait = self.step()
            last = check()
            if last:
                return last
            if time.monotonic() > end:
                statuses = {n: (self.get(p, n) or {}).get("status") for p, n, _ in self.targets}
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what}; statuses: {statuses}; "
                    f"events: {self.events[-10:]}"
                )
            time.sleep(wait)

    def run_to_end(self, plural: str, name: str, timeout: float) -> str:
        """Drive until the resource is Succeeded or Failed; that phase."""
        done = ("Succeeded", "Failed")
        return self.run_until(
            f"{plural} {name} to finish", lambda: (p := self.phase(plural, name)) in done and p, timeout
        )

    def phase(self, plural: str, name: str) -> str | None:
        return ((self.get(plural, name) or {}).get("status") or {}).get("phase")

    def condition(self, plural: str, name: str, type_: str) -> dict | None:
        conds = ((self.get(plural, name) or {}).get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["type"] == type_), None)
