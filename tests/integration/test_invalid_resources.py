"""Invalid resources are refused by the API server itself, naming the offending field; none is
stored, so none reaches the operator."""

from __future__ import annotations

import json

import pytest

from capstan_api import KINDS
from capstan_api.common import GROUP
from tests.support.invalid_cases import load_cases

pytestmark = pytest.mark.cluster
CASES = load_cases()


def leaf_path(patch: dict) -> list[str]:
    """The keys down to the one value a single-field merge patch sets."""
    path = []
    while isinstance(patch, dict):
        (key, patch), *_ = patch.items()
        path.append(key)
    return path


def dig(obj: dict, path: list[str]):
    for key in path:
        obj = obj[key]
    return obj


def test_every_invalid_resource_is_refused_naming_its_field(cluster, capstan_crds, namespace):
    failures = []
    for case in CASES:
        obj = case.resource
        # Fully qualified: a bare "deployment" is apps/v1.
        kind, name = f"{KINDS[obj['kind']].plural}.{GROUP}", obj["metadata"]["name"]
        r = cluster.kubectl("apply", "-n", namespace, "-f", str(case.path), check=False)
        if case.patch is not None:
            # Immutable field: the resource is valid; changing the field afterwards is not.
            assert r.returncode == 0, f"{case.path.name}: the starting resource was refused: {r.stderr}"
            r = cluster.kubectl(
                "patch",
                kind,
                name,
                "-n",
                namespace,
                "--type=merge",
                "-p",
                json.dumps(case.patch),
                check=False,
            )
            stored = cluster.get(kind, name, namespace)
            assert stored is not None
            path = leaf_path(case.patch)
            assert dig(stored, path) == dig(case.resource, path), f"{case.path.name}: {path} changed"
        else:
            assert cluster.get(kind, name, namespace) is None, f"{case.path.name} was stored"
        if r.returncode == 0 or not case.named_by(r.stderr):
            failures.append(
                f"{case.path.name} (want {case.field!r} {case.message!r}): rc={r.returncode} {r.stderr}"
            )
    assert failures == [], "\n".join(failures)
    assert len(CASES) >= 20
