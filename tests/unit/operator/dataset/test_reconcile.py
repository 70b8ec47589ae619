"""The Dataset reconciler's decisions on an in-memory API (the real Jobs and workload are in
tests/integration): refuse a licence without a pod, run the stages one Indexed Job after another,
surface a failed pod's exit code and log naming the stage, sum the workers' progress files into
status.stages, report the manifest's statistics, and stop once Ready."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from capstan_api.preparation import STAGES, progress_uri
from capstan_operator.config import OperatorConfig
from capstan_operator.dataset import build as build_dataset
from capstan_operator.dataset import lineage, progress
from capstan_operator.dataset import reconcile as reconcile_dataset
from tests.unit.operator.fake_kube import FakeKube, fake_kube, write_status
from tests.unit.operator.resources import dataset

__all__ = ["fake_kube"]  # fixture
CFG = OperatorConfig()
ROOT = "s3://bucket/out"
OUT = f"{ROOT}/revisions/1"
MANIFEST = {
    "fingerprint": "sha256:ab",
    "stats": {
        "stages": [{"stage": "read", "in": 10, "out": 9}, {"stage": "nearDedup", "in": 9, "out": 8}],
        "documents": {"train": 7, "validation": 1},
        "tokens": {"train": 900, "validation": 100},
        "shards": 2,
        "toxicity": {"removed": 1, "byCategory": {"insult": 1}},
        "augmentation": {"drawn": 3, "copies": 2, "swaps": 5},
    },
}


@pytest.fixture(autouse=True)
def _fresh_progress_cache():
    progress.CACHE.clear()
    yield
    progress.CACHE.clear()


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_name(stage: str) -> str:
    return build_dataset.stage_job_name("web", stage)


def reconcile(body: dict):
    """One pass; the status patch is written back as the status subresource would take it."""
    out = reconcile_dataset.reconcile(body, CFG)
    write_status(body, out.status)
    return out


def cond(body: dict, type_: str) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == type_)


def stages(body: dict) -> dict[str, dict]:
    return {s["name"]: s for s in body["status"]["stages"]}


def finish_job(fake: FakeKube, stage: str, condition: str = "Complete") -> None:
    job = fake.objects[("Job", job_name(stage))]
    workers = job["spec"]["completions"]
    succeeded = workers if condition == "Complete" else 0
    job["status"] = {"succeeded": succeeded, "conditions": [{"type": condition, "status": "True"}]}


def run_to_the_end(fake: FakeKube, body: dict) -> None:
    """Each pass creates the next stage's Job; the Job controller completes it."""
    for stage in STAGES:
        reconcile(body)
        finish_job(fake, stage)


def test_first_pass_creates_the_configmap_and_the_first_stage_once(fake_kube: FakeKube):
    body = dataset("web", workers=3)
    out = reconcile(body)
    assert fake_kube.calls == [("apply", "ConfigMap", "web-prepare"), ("apply", "Job", "web-prepare-map")]
    job = fake_kube.objects[("Job", "web-prepare-map")]
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 3)
    s = body["status"]
    assert s["phase"] == "Running" and s["startTime"]
    assert s["message"] == "revision 1, stage map (1/6): 0/3 workers done"
    assert [(x["name"], x["workers"], x["phase"]) for x in s["stages"]] == [
        ("map", 3, "Running"),
        ("dedup", 3, "Pending"),
        ("cluster", 1, "Pending"),
        ("tokenize", 3, "Pending"),
        ("shard", 3, "Pending"),
        ("finish", 1, "Pending"),
    ]
    assert [(e[1], e[2]) for e in out.events] == [
        ("RevisionStarted", f"revision 1: preparing into {OUT}"),
        ("Created", "Job web-prepare-map: stage map with 3 worker(s)"),
        ("Preparing", "revision 1, stage map (1/6): 0/3 workers done"),
    ]
    again = reconcile(body)
    assert len(fake_kube.calls) == 2, "a second pass must not write the children again"
    assert again.status == {} and again.requeue_after == reconcile_dataset.POLL_SECONDS
    assert reconcile_dataset.POLL_SECONDS <= 15, "progress must reach status within 30 s"


def test_a_complete_stage_starts_the_next_without_rewriting_the_configmap(fake_kube: FakeKube):
    body = dataset("web", workers=3)
    reconcile(body)
    finish_job(fake_kube, "map")
    out = reconcile(body)
    assert fake_kube.calls[2:] == [("apply", "Job", "web-prepare-dedup")]
    assert [e[2] for e in out.events] == ["Job web-prepare-dedup: stage dedup with 3 worker(s)"]
    st = stages(body)
    assert (st["map"]["phase"], st["map"]["workersDone"]) == ("Complete", 3)
    assert st["dedup"]["phase"] == "Running" and st["cluster"]["phase"] == "Pending"
    assert body["status"]["message"] == "revision 1, stage dedup (2/6): 0/3 workers done"
    assert cond(body, "Ready")["message"] == "revision 1, stage dedup (2/6): Job web-prepare-dedup is running"


def test_the_plan_is_the_one_the_preparation_started_with(fake_kube: FakeKube):
    body = dataset("web", workers=3)
    reconcile(body)
    finish_job(fake_kube, "map")
    # An edit while preparing: the map stage wrote 3 workers' parts, so the rest must use 3 too.
    body["spec"]["workers"] = 5
    body["metadata"]["generation"] = 2
    reconcile(body)
    dedup = fake_kube.objects[("Job", "web-prepare-dedup")]
    assert dedup["spec"]["completions"] == 3
    assert dedup["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == ["--workers", "3"]
    assert [s["workers"] for s in body["status"]["stages"]] == [3, 3, 1, 3, 3, 1]


def test_workers_progress_files_are_summed_into_the_stage(fake_kube: FakeKube):
    body = dataset("web", workers=3)
    reconcile(body)
    for i, (n_in, n_out) in enumerate([(10, 8), (20, 15)]):  # worker 2 has not written yet
        fake_kube.files[progress_uri(OUT, "map", i)] = {
            "stage": "map",
            "index": i,
            "workers": 3,
            "documentsIn": n_in,
            "documentsOut": n_out,
        }
    out = reconcile(body)
    assert (stages(body)["map"]["documentsIn"], stages(body)["map"]["documentsOut"]) == (30, 23)
    assert set(out.status) == {"stages"}, "only the counts changed"
    assert reconcile(body).status == {}, "nothing new, nothing written"
    fake_kube.files[progress_uri(OUT, "map", 2)] = {
        "stage": "map",
        "index": 2,
        "workers": 3,
        "documentsIn": 5,
    }
    reconcile(body)
    assert stages(body)["map"]["documentsIn"] == 35
    # The stage completes: its counts stay in status once the next stage runs.
    finish_job(fake_kube, "map")
    reconcile(body)
    assert stages(body)["map"] == {
        "name": "map",
        "workers": 3,
        "workersDone": 3,
        "documentsIn": 35,
        "documentsOut": 23,
        "phase": "Complete",
    }
    assert stages(body)["dedup"]["documentsIn"] == 0


def test_a_malformed_progress_file_is_unreadable_not_a_crash(fake_kube: FakeKube):
    body = dataset("web")
    reconcile(body)
    fake_kube.files[progress_uri(OUT, "map", 0)] = {"stage": "map", "index": 0, "documentsIn": "many"}
    with pytest.raises(progress.objectstore.Unreadable, match="progress-00000.json"):
        reconcile(body)


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


def test_a_failed_stage_reports_the_stage_and_the_pods_exit_code_and_log(fake_kube: FakeKube):
    body = dataset("web", workers=2)
    reconcile(body)
    finish_job(fake_kube, "map")
    reconcile(body)
    finish_job(fake_kube, "dedup", "Failed")
    pod = f"{job_name('dedup')}-1-abcde"
    fake_kube.add(
        {
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": "team-a", "labels": {"job-name": job_name("dedup")}},
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {"name": "prepare", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}
                ],
            },
        }
    )
    fake_kube.logs[pod] = "band 3: run file is not sorted\n"
    calls = len(fake_kube.calls)
    out = reconcile(body)
    assert len(fake_kube.calls) == calls, "nothing more is created after a failed stage"
    assert body["status"]["phase"] == "Failed" and cond(body, "Failed")["reason"] == "PrepareFailed"
    assert body["status"]["message"].startswith(
        f"stage dedup: pod {pod} container prepare exited with code 3 (Error)"
    )
    assert "run file is not sorted" in body["status"]["message"]
    assert [s["phase"] for s in body["status"]["stages"]][:3] == ["Complete", "Failed", "Pending"]
    assert out.requeue_after is None


def test_a_pod_that_cannot_start_is_pending_with_the_reason(fake_kube: FakeKube):
    body = dataset("web")
    reconcile(body)
    fake_kube.add(
        {
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "team-a", "labels": {"job-name": job_name("map")}},
            "status": {
                "containerStatuses": [
                    {
                        "name": "prepare",
                        "image": "capstan/trainer:0",
                        "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}},
                    }
                ]
            },
        }
    )
    fake_kube.objects[("Job", job_name("map"))]["metadata"]["creationTimestamp"] = ago(60)
    reconcile(body)
    assert body["status"]["phase"] == "Pending" and fake_kube.calls[-1][0] == "apply"
    assert cond(body, "Ready")["reason"] == "ErrImagePull"

    # Past spec.startDeadlineSeconds (default 600 s): the stage's Job goes and the Dataset fails.
    fake_kube.objects[("Job", job_name("map"))]["metadata"]["creationTimestamp"] = ago(601)
    out = reconcile(body)
    assert fake_kube.calls[-1] == ("delete", "Job", job_name("map"), "Foreground")
    assert body["status"]["phase"] == "Failed" and cond(body, "Failed")["reason"] == "ErrImagePull"
    assert body["status"]["message"].startswith(
        "stage map: pods did not start within startDeadlineSeconds (600 s): pod p container prepare "
        "(image capstan/trainer:0) cannot start: ErrImagePull: not found"
    )
    assert out.requeue_after is None


@pytest.mark.parametrize("manifest", [None, MANIFEST])
def test_after_the_last_stage_the_manifest_or_its_absence(fake_kube: FakeKube, manifest):
    body = dataset("web", workers=2)
    run_to_the_end(fake_kube, body)
    assert [c[2] for c in fake_kube.calls if c[1] == "Job"] == [job_name(s) for s in STAGES]
    if manifest is None:
        reconcile(body)
        assert cond(body, "Failed")["reason"] == "ManifestMissing"
        assert body["status"]["message"] == f"every stage completed but {OUT}/manifest.json is missing"
        return
    fake_kube.files[f"{OUT}/manifest.json"] = manifest
    out = reconcile(body)
    s = body["status"]
    assert (s["phase"], s["documents"], s["tokens"], s["validationTokens"], s["shards"]) == (
        "Ready",
        8,
        900,
        100,
        2,
    )
    assert s["steps"] == [
        {"name": "read", "documentsIn": 10, "documentsOut": 9},
        {"name": "nearDedup", "documentsIn": 9, "documentsOut": 8},
    ]
    assert [(x["name"], x["phase"], x["workersDone"]) for x in s["stages"]] == [
        ("map", "Complete", 2),
        ("dedup", "Complete", 2),
        ("cluster", "Complete", 1),
        ("tokenize", "Complete", 2),
        ("shard", "Complete", 2),
        ("finish", "Complete", 1),
    ]
    assert s["manifestUri"] == f"{OUT}/manifest.json" and s["fingerprint"] == "sha256:ab"
    assert s["toxicity"] == {"removed": 1, "byCategory": {"insult": 1}}
    assert s["augmentation"] == {"drawn": 3, "copies": 2, "swaps": 5}
    assert cond(body, "Ready")["status"] == "True" and out.requeue_after == lineage.LINEAGE_POLL
    # Ready at this generation: the next pass reads nothing and writes nothing.
    fake_kube.objects.clear()
    body["status"]["observedGeneration"] = 1
    assert reconcile_dataset.reconcile(body, CFG).status == {}


def ready(fake: FakeKube, body: dict, revision: int = 1) -> None:
    """Prepare `body` to the end: Ready with MANIFEST in the revision's folder."""
    fake.files[f"{ROOT}/revisions/{revision}/manifest.json"] = MANIFEST
    run_to_the_end(fake, body)
    reconcile(body)
    assert (body["status"]["phase"], body["status"]["revision"]) == ("Ready", revision)


def edit(body: dict, **spec) -> None:
    body["spec"] |= spec
    body["metadata"]["generation"] += 1


def test_an_edit_of_what_is_prepared_is_prepared_again_as_the_next_revision(fake_kube: FakeKube):
    body = dataset("web", workers=2)
    ready(fake_kube, body)
    assert body["status"]["manifestUri"] == f"{ROOT}/revisions/1/manifest.json"
    fake_kube.calls.clear()
    edit(body, filters={"length": {"minChars": 500}})
    out = reconcile(body)
    # The last revision's Jobs (with their pods) and ConfigMap go; its files stay.
    assert sorted(c[1:3] for c in fake_kube.calls) == sorted(
        [("ConfigMap", "web-prepare")] + [("Job", job_name(s)) for s in STAGES]
    )
    assert all(c[0] == "delete" for c in fake_kube.calls)
    assert body["status"]["phase"] == "Pending" and body["status"]["observedGeneration"] == 2
    assert [(e[1], e[2]) for e in out.events][0] == (
        "SpecChanged",
        "spec changed (generation 2): preparing a new revision; revision 1 stays in its folder",
    )
    fake_kube.calls.clear()
    reconcile(body)
    assert fake_kube.calls == [("apply", "ConfigMap", "web-prepare"), ("apply", "Job", "web-prepare-map")]
    s = body["status"]
    assert (s["revision"], s["phase"]) == (2, "Running")
    assert "manifestUri" not in s and "documents" not in s, "revision 1's outputs left status"
    cm = fake_kube.objects[("ConfigMap", "web-prepare")]
    assert f"uri: {ROOT}/revisions/2" in cm["data"]["resource.yaml"]
    assert "minChars: 500" in cm["data"]["resource.yaml"]
    ready(fake_kube, body, revision=2)
    assert body["status"]["manifestUri"] == f"{ROOT}/revisions/2/manifest.json"


def test_an_edit_of_how_it_runs_keeps_the_prepared_revision(fake_kube: FakeKube):
    body = dataset("web", workers=2)
    ready(fake_kube, body)
    fake_kube.calls.clear()
    edit(body, workers=8, resources={"cpu": "4"})
    reconcile(body)
    assert fake_kube.calls == [], "nothing is prepared again"
    s = body["status"]
    assert (s["phase"], s["revision"], s["observedGeneration"]) == ("Ready", 1, 2)


def test_a_failed_revision_whose_spec_is_edited_is_retried_as_the_next(fake_kube: FakeKube):
    body = dataset("web")
    reconcile(body)
    finish_job(fake_kube, "map", "Failed")
    reconcile(body)
    assert body["status"]["phase"] == "Failed"
    # Only `resources` changes (e.g. more memory after an OOM kill): that is worth a retry.
    edit(body, resources={"memory": "8Gi"})
    reconcile(body)
    assert body["status"]["phase"] == "Pending" and "Failed" not in [
        c["type"] for c in body["status"]["conditions"]
    ]
    reconcile(body)
    assert body["status"]["revision"] == 2 and body["status"]["phase"] == "Running"


def test_a_revision_number_whose_status_write_was_lost_is_never_reused(fake_kube: FakeKube):
    body = dataset("web")
    reconcile(body)
    del body["status"]["revision"]  # the status write after the ConfigMap was created was lost
    edit(body, filters={"length": {"minChars": 500}})
    reconcile(body)
    reconcile(body)
    assert body["status"]["revision"] == 2
