"""An in-memory stand-in for kube.py's reads and writes, for reconciler unit tests: objects keyed
by (kind, name), label selectors of the `k=v,k2=v2` form, apply as a shallow merge."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from capstan_operator import kube


class FakeKube:
    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.objects: dict[tuple[str, str], dict] = {}
        self.custom: dict[tuple[str, str], dict] = {}
        for fn in ("get", "list_", "apply", "delete", "get_custom", "list_custom"):
            monkeypatch.setattr(kube, fn, getattr(self, fn))

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        return copy.deepcopy(self.objects.get((kind, name)))

    def list_(self, api_version: str, kind: str, namespace: str, selector: str = "") -> list[dict]:
        want = dict(kv.split("=", 1) for kv in selector.split(",") if kv)
        return [
            copy.deepcopy(o)
            for (k, _), o in sorted(self.objects.items())
            if k == kind and want.items() <= (o["metadata"].get("labels") or {}).items()
        ]

    def apply(self, obj: dict[str, Any]) -> dict:
        key = (obj["kind"], obj["metadata"]["name"])
        old = self.objects.get(key)
        if old is None:
            self.objects[key] = copy.deepcopy(obj)
        else:
            ann = {**(old["metadata"].get("annotations") or {}), **(obj["metadata"].get("annotations") or {})}
            old["metadata"]["annotations"] = ann
            old["spec"] = copy.deepcopy(obj.get("spec"))
        return self.objects[key]

    def delete(self, api_version: str, kind: str, namespace: str, name: str, propagation: str = "") -> bool:
        return self.objects.pop((kind, name), None) is not None

    def get_custom(self, plural: str, namespace: str, name: str) -> dict | None:
        return copy.deepcopy(self.custom.get((plural, name)))

    def list_custom(self, plural: str, namespace: str) -> list[dict]:
        return [copy.deepcopy(o) for (p, _), o in sorted(self.custom.items()) if p == plural]

    # ---- what the cluster's controllers would do
    def make_ready(self, name: str, ready: int | None = None) -> None:
        """The apps/v1 Deployment `name` has `ready` (default: all its) pods Ready."""
        dep = self.objects[("Deployment", name)]
        dep["status"] = {"readyReplicas": dep["spec"]["replicas"] if ready is None else ready}
        labels = dep["spec"]["template"]["metadata"]["labels"]
        for i in range(dep["status"]["readyReplicas"]):
            pod = f"{name}-{i}"
            self.objects[("Pod", pod)] = {
                "metadata": {"name": pod, "labels": labels},
                "status": {"podIP": f"127.0.1.{i + 1}", "conditions": [{"type": "Ready", "status": "True"}]},
            }

    def replicas(self, name: str) -> int | None:
        dep = self.objects.get(("Deployment", name))
        return None if dep is None else dep["spec"]["replicas"]


def write_status(body: dict, patch: dict) -> None:
    """Apply a reconciler's status merge patch to `body` as the status subresource would."""
    status = body.setdefault("status", {})
    for k, v in patch.items():
        if v is None:
            status.pop(k, None)
        else:
            status[k] = v
