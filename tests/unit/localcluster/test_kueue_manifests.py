"""What the local cluster installs of Kueue, from the pinned module's config/components: the
webhooks the API server calls on loopback, and only those Kueue serves with the Job integration
(a Pod webhook with failurePolicy Fail and no server behind it would refuse every pod)."""

from __future__ import annotations

import base64

import pytest

from hack.localcluster import kueue

URL = "https://127.0.0.1:9443"


@pytest.fixture(scope="module")
def module():
    """The pinned release in the Go module cache (`go mod download`: needs Go, as the build does)."""
    return kueue.module_dir()


def test_webhooks_call_loopback_and_cover_only_kueue_and_jobs(module):
    configs = kueue.webhooks(module, URL, b"CA")
    assert [c["metadata"]["name"] for c in configs] == list(kueue.WEBHOOK_NAMES)
    hooks = [h for c in configs for h in c["webhooks"]]
    groups = {g for h in hooks for r in h["rules"] for g in r["apiGroups"]}
    assert groups == {"kueue.x-k8s.io", "batch"}
    assert {"mjob.kb.io", "vjob.kb.io"} <= {h["name"] for h in hooks}
    for h in hooks:
        assert h["clientConfig"]["url"].startswith(f"{URL}/") and "service" not in h["clientConfig"]
        assert base64.b64decode(h["clientConfig"]["caBundle"]) == b"CA"
    job = next(h for h in hooks if h["name"] == "mjob.kb.io")
    assert job["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "kueue-system"]


def test_converted_crds_call_the_webhook_and_the_rest_do_not(module):
    crds = {c["spec"]["names"]["plural"]: c for c in kueue.crds(module, URL, b"CA")}
    assert {"workloads", "clusterqueues", "localqueues", "resourceflavors"} <= crds.keys()
    for plural, crd in crds.items():
        conversion = crd["spec"].get("conversion")
        if plural in kueue.CONVERTED:
            assert conversion["webhook"]["clientConfig"]["url"] == f"{URL}/convert", plural
        else:
            assert conversion is None or conversion.get("strategy") == "None", plural


def test_configuration_binds_loopback_and_sets_wait_for_pods_ready(tmp_path):
    ports = {"webhook": 1, "health": 2, "metrics": 3}
    cfg = kueue.config(ports, tmp_path, wait_for_pods_ready_s=45)
    assert cfg["webhook"] == {"host": "127.0.0.1", "port": 1, "certDir": str(tmp_path)}
    assert cfg["health"]["healthProbeBindAddress"] == "127.0.0.1:2"
    assert cfg["integrations"]["frameworks"] == ["batch/job"]
    assert cfg["waitForPodsReady"]["timeout"] == "45s" and cfg["internalCertManagement"] == {"enable": False}
    assert "waitForPodsReady" not in kueue.config(ports, tmp_path, wait_for_pods_ready_s=None)
