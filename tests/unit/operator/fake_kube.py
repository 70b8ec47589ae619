"""An in-memory stand-in for kube.py's reads and writes and objectstore.read_json, for the
reconciler unit tests: objects keyed by (kind, name), custom resources by (plural, name), label
selectors of the `k=v,k2=v2` form, apply as a merge of annotations and spec; every write is
recorded in `calls` and every list counted in `lists`."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from capstan_operator import kube, objectstore


class FakeKube:
    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.objects: dict[tuple[str, str], dict] = {}
        self.custom: dict[tuple[str, str], dict] = {}
        self.files: dict[str, dict] = {}
        """JSON documents in object storage, by URI (file:// URIs not here are read for real)."""
        self.logs: dict[str, str] = {}
        """container logs by pod name."""
        self.calls: list[tuple[str, ...]] = []
        """the writes: ("apply", kind, name), ("delete", kind, name, propagation)."""
        self.lists = 0
        for fn in ("get", "list_", "apply", "delete", "get_custom", "list_custom", "pod_log"):
            monkeypatch.setattr(kube, fn, getattr(self, fn))
        monkeypatch.setattr(kube, "apply_custom", self.apply)
        monkeypatch.setattr(kube, "list_nodes", lambda selector="": self.list_("v1", "Node", "", selector))
        real_read_json = objectstore.read_json

        def read_json(uri: str, cfg, field: str = "uri") -> dict | None:
            if uri in self.files:
                return copy.deepcopy(self.files[uri])
            # Never reach for a network store from a unit test; local files are real files.
            local = dataclasses.replace(cfg, allowed_uri_schemes=("file",))
            return real_read_json(uri, local, field) if uri.startswith("file://") else None

        monkeypatch.setattr(objectstore, "read_json", read_json)

    def add(self, obj: dict) -> dict:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return obj

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        return copy.deepcopy(self.objects.get((kind, name)))

    def list_(
        self, api_version: str, kind: str, namespace: str, selector: str = "", field_selector: str = ""
    ) -> list[dict]:
        self.lists += 1
        want = dict(kv.split("=", 1) for kv in selector.split(",") if kv)
        fields = dict(kv.split("=", 1) for kv in field_selector.split(",") if kv)

        def field(o: dict, path: str):
            for part in path.split("."):
                o = (o or {}).get(part)
            return o

        return [
            copy.deepcopy(o)
            for (k, _), o in sorted(self.objects.items())
            if k == kind
            and want.items() <= (o["metadata"].get("labels") or {}).items()
            and all(field(o, p) == v for p, v in fields.items())
        ]

    def apply(self, obj: dict[str, Any]) -> dict:
        self.calls.append(("apply", obj["kind"], obj["metadata"]["name"]))
        key = (obj["kind"], obj["metadata"]["name"])
        old = self.objects.get(key)
        if old is None:
            self.objects[key] = copy.deepcopy(obj)
        else:
            ann = {**(old["metadata"].get("annotations") or {}), **(obj["metadata"].get("annotations") or {})}
            old["metadata"]["annotations"] = ann
            old["spec"] = copy.deepcopy(obj.get("spec"))
            if "data" in obj:  # a ConfigMap's content is replaced too
                old["data"] = copy.deepcopy(obj["data"])
        return self.objects[key]

    def delete(
        self, api_version: str, kind: str, namespace: str, name: str, propagation: str = "Background"
    ) -> bool:
        self.calls.append(("delete", kind, name, propagation))
        return self.objects.pop((kind, name), None) is not None

    def get_custom(self, plural: str, namespace: str, name: str) -> dict | None:
        return copy.deepcopy(self.custom.get((plural, name)))

    def list_custom(self, plural: str, namespace: str, selector: str = "", **group_version) -> list[dict]:
        want = dict(kv.split("=", 1) for kv in selector.split(",") if kv)
        return [
            copy.deepcopy(o)
            for (p, _), o in sorted(self.custom.items())
            if p == plural and want.items() <= (o["metadata"].get("labels") or {}).items()
        ]

    def pod_log(self, namespace: str, name: str, container: str, tail_lines: int) -> str:
        return self.logs.get(name, "")

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


@pytest.fixture
def fake_kube(monkeypatch) -> FakeKube:
    return FakeKube(monkeypatch)


def write_status(body: dict, patch: dict) -> None:
    """Apply a reconciler's status merge patch to `body` as the status subresource would."""
    status = body.setdefault("status", {})
    for k, v in patch.items():
        if v is None:
            status.pop(k, None)
        else:
            status[k] = v
