"""Dataset reconciled on the real API server with a real prepare pod run by the node agent."""

from __future__ import annotations

import pytest

from capstan_operator.dataset import reconcile
from tests.support.operator_env import dataset_yaml, driver, op_cfg, operator_cluster, upload_corpus

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures


def test_dataset_prepares_the_bundled_corpus_and_goes_ready(operator_cluster, namespace, driver, s3_bucket):
    source = upload_corpus(s3_bucket)
    operator_cluster.apply(dataset_yaml("stories", source, f"{s3_bucket}/out/stories"), namespace)
    driver.add("datasets", "stories", reconcile.reconcile)
    driver.run_until(
        "Dataset stories to be Ready",
        lambda: driver.phase("datasets", "stories") in ("Ready", "Failed"),
        timeout=240,
    )
    status = driver.get("datasets", "stories")["status"]
    assert status["phase"] == "Ready", status
    assert status["manifestUri"] == f"{s3_bucket}/out/stories/manifest.json"
    stages = {s["name"]: s for s in status["stages"]}
    assert stages["read"]["documentsIn"] == 340
    assert stages["licence"]["documentsOut"] < stages["licence"]["documentsIn"]  # CC-BY-NC documents
    assert status["documents"] > 200 and status["tokens"] > 10_000 and status["shards"] >= 2
    assert len(status["fingerprint"]) == 64
    ready = driver.condition("datasets", "stories", "Ready")
    assert (ready["status"], ready["observedGeneration"]) == ("True", 1)
    reasons = [e[2] for e in driver.events]
    assert reasons[:1] == ["Created"] and "Prepared" in reasons
    # The children carry owner references to the Dataset (deleting it deletes them).
    job = operator_cluster.get("job", "stories-prepare", namespace)
    assert job["metadata"]["ownerReferences"][0]["name"] == "stories"
    # Level-based: another pass changes nothing and creates nothing.
    assert reconcile.reconcile(driver.get("datasets", "stories"), driver.cfg).status == {}


def test_licence_outside_the_policy_fails_without_a_pod(operator_cluster, namespace, driver, s3_bucket):
    operator_cluster.apply(
        dataset_yaml("nc", f"{s3_bucket}/corpus/*.jsonl", f"{s3_bucket}/out/nc", licence="CC-BY-NC-4.0"),
        namespace,
    )
    driver.add("datasets", "nc", reconcile.reconcile)
    driver.run_until("Dataset nc to fail", lambda: driver.phase("datasets", "nc") == "Failed", timeout=30)
    cond = driver.condition("datasets", "nc", "LicenseNotAllowed")
    assert cond["status"] == "True"
    assert "spec.sources[0].licence: CC-BY-NC-4.0 is not allowed" in cond["message"]
    assert operator_cluster.list("pods", namespace) == []
    assert operator_cluster.get("job", "nc-prepare", namespace) is None
