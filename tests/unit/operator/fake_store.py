"""An in-memory stand-in for `capstan_operator.kube` and `objectstore.read_json` for the
TrainingRun reconciler tests: records every write and counts lists (fake_kube.py serves the
Evaluation and Deployment tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from capstan_operator import kube, objectstore


@dataclass
class FakeKube:
    objects: dict[tuple[str, str], dict] = field(default_factory=dict)
    """objects are keyed by (kind, name); custom resources by (plural, name)."""
    files: dict[str, dict] = field(default_factory=dict)
    """files are JSON objects in object storage, by URI."""
    logs: dict[str, str] = field(default_factory=dict)
    """logs are container logs by pod name."""
    calls: list[tuple[str, ...]] = field(default_factory=list)
    """calls are the writes: ("apply", kind, name), ("delete", kind, name, propagation)."""
    lists: int = 0
    """lists counts list requests."""

    def add(self, obj: dict) -> dict:
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return obj

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        return self.objects.get((kind, name))

    def list_(self, api_version: str, kind: str, namespace: str, selector: str = "") -> list[dict]:
        self.lists += 1
        return [o for (k, _), o in self.objects.items() if k == kind]

    def get_custom(self, plural: str, namespace: str, name: str) -> dict | None:
        return self.objects.get((plural, name))

    def apply(self, obj: dict) -> dict:
        self.calls.append(("apply", obj["kind"], obj["metadata"]["name"]))
        return self.add(obj)

    def delete(self, api_version: str, kind: str, namespace: str, name: str, propagation: str = "Background"):
        self.calls.append(("delete", kind, name, propagation))
        return self.objects.pop((kind, name), None) is not None

    def pod_log(self, namespace: str, name: str, container: str, tail_lines: int) -> str:
        return self.logs.get(name, "")

    def read_json(self, uri: str, cfg) -> dict | None:
        return self.files.get(uri)


@pytest.fixture
def fake_kube(monkeypatch) -> FakeKube:
    fake = FakeKube()
    for name in ("get", "list_", "get_custom", "apply", "delete", "pod_log"):
        monkeypatch.setattr(kube, name, getattr(fake, name))
    monkeypatch.setattr(kube, "apply_custom", fake.apply)
    monkeypatch.setattr(objectstore, "read_json", fake.read_json)
    return fake
