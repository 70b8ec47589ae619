"""The Dataset reconciler's decisions on an in-memory API (the real Job and workload are in
tests/integration): refuse a licence without a pod, create the Job once, surface a failed pod's
exit code and log, report the manifest's statistics, and stop once Ready."""

from __future__ import annotations

import pytest

from capstan_operator.config import OperatorConfig
from capstan_operator.dataset import build as build_dataset
from capstan_operator.dataset import reconcile as reconcile_dataset
from tests.unit.operator.fake_kube import FakeKube, fake_kube, write_status
from tests.unit.operator.resources import dataset

__all__ = ["fake_kube"]  # fixture
CFG = OperatorConfig()
JOB = build_dataset.job_name("web")


def reconcile(body: dict):
    """One pass; the status patch is written back as the status subresource would take it."""
    out = reconcile_dataset.reconcile(body, CFG)
    write_status(body, out.status)
    return out


def cond(body: dict, type_: str) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == type_)


def finish_job(fake: FakeKube, condition: str) -> None:
    fake.objects[("Job", JOB)]["status"] = {"conditions": [{"type": condition, "status": "True"}]}


def test_first_pass_creates_the_job_once_and_reports_running(fake_kube: FakeKube):
    body = dataset("web")
    out = reconcile(body)
    assert [c[1] for c in fake_kube.calls] == ["ConfigMap", "Job"]
    assert body["status"]["phase"] == "Running" and body["status"]["startTime"]
    assert [e[1] for e in out.events] == ["Created", "Preparing"]
    again = reconcile(body)
    assert len(fake_kube.calls) == 2, "a second pass must not write the children again"
    assert again.status == {} and again.requeue_after == reconcile_dataset.POLL_SECONDS


def test_a_licence_outside_the_policy_fails_without_a_job(fake_kube: FakeKube):
    body = dataset("web", licence="LicenseRef-proprietary")
    out = reconcile(body)
    assert fake_kube.calls == []
    assert body["status"]["phase"] == "Failed" and body["status"]["completionTime"]
    refused = cond(body, "LicenseNotAllowed")
    assert refused["status"] == "True"
    assert "spec.sources[0].licence: LicenseRef-proprietary is not allowed" in refused["message"]
    assert cond(body, "Ready")["status"] == "False"
    assert [(e[0], e[1]) for e in out.events] == [("Warning", "LicenseNotAllowed")]


def test_an_invalid_spec_names_the_field(fake_kube: FakeKube):
    body = dataset("web")
    body["spec"]["output"] = {}
    reconcile(body)
    assert fake_kube.calls == [] and body["status"]["phase"] == "Failed"
    assert cond(body, "Failed")["reason"] == "InvalidSpec"
    assert "spec.output.uri" in body["status"]["message"]


def test_a_failed_job_reports_the_pods_exit_code_and_log(fake_kube: FakeKube):
    body = dataset("web")
    reconcile(body)
    finish_job(fake_kube, "Failed")
    pod = f"{JOB}-abc"
    fake_kube.add(
        {
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": "team-a", "labels": {"job-name": JOB}},
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {"name": "prepare", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}
                ],
            },
        }
    )
    fake_kube.logs[pod] = "s3://bucket/raw/a.jsonl line 7: not JSON\n"
    reconcile(body)
    assert body["status"]["phase"] == "Failed" and cond(body, "Failed")["reason"] == "PrepareFailed"
    assert f"pod {pod} container prepare exited with code 3 (Error)" in body["status"]["message"]
    assert "line 7: not JSON" in body["status"]["message"]


@pytest.mark.parametrize("manifest", [None, {"stats": {}}])
def test_a_complete_job_reports_the_manifest_or_its_absence(fake_kube: FakeKube, manifest):
    body = dataset("web")
    reconcile(body)
    finish_job(fake_kube, "Complete")
    if manifest is None:
        reconcile(body)
        assert cond(body, "Failed")["reason"] == "ManifestMissing"
        assert (
            body["status"]["message"] == f"Job {JOB} completed but s3://bucket/out/manifest.json is missing"
        )
        return
    fake_kube.files["s3://bucket/out/manifest.json"] = {
        "fingerprint": "sha256:ab",
        "stats": {
            "stages": [{"stage": "dedup", "in": 10, "out": 8}],
            "documents": {"train": 7, "validation": 1},
            "tokens": {"train": 900, "validation": 100},
            "shards": 2,
        },
    }
    out = reconcile(body)
    s = body["status"]
    assert (s["phase"], s["documents"], s["tokens"], s["validationTokens"], s["shards"]) == (
        "Ready",
        8,
        900,
        100,
        2,
    )
    assert s["stages"] == [{"name": "dedup", "documentsIn": 10, "documentsOut": 8}]
    assert s["manifestUri"] == "s3://bucket/out/manifest.json" and s["fingerprint"] == "sha256:ab"
    assert cond(body, "Ready")["status"] == "True" and out.requeue_after is None
    # Ready at this generation: the next pass reads nothing and writes nothing.
    fake_kube.objects.clear()
    body["status"]["observedGeneration"] = 1
    assert reconcile_dataset.reconcile(body, CFG).status == {}
