"""The Deployment reconciler's rollout logic on an in-memory API (the real API server and real
serving pods are in tests/integration/test_reconcile_deployment.py)."""

from __future__ import annotations

import json

import pytest

from capstan_operator.config import OperatorConfig
from capstan_operator.deployment import analysis as canary_analysis
from capstan_operator.deployment import build as bd
from capstan_operator.deployment import export
from capstan_operator.deployment import reconcile as reconcile_deployment
from capstan_operator.deployment.analysis import Sample
from tests.unit.operator.fake_kube import FakeKube, write_status
from tests.unit.operator.resources import deployment

CFG = OperatorConfig()
STEPS = [{"weight": 25, "pauseSeconds": 0}, {"weight": 100, "pauseSeconds": 0}]
GOOD = Sample(requests=50, errors=0, buckets={0.1: 50, float("inf"): 50})
ERRORS = Sample(requests=50, errors=10, buckets={0.1: 50, float("inf"): 50})


@pytest.fixture
def fake(monkeypatch) -> FakeKube:
    return FakeKube(monkeypatch)


@pytest.fixture
def metrics(monkeypatch) -> dict:
    """What the canary pods' /metrics add up to; tests set ["sample"]."""
    box = {"sample": GOOD, "scraped": [], "runtimes": []}

    def scrape(ips, port, runtime):
        box["scraped"].append(list(ips))
        box["runtimes"].append(runtime)
        return box["sample"], []

    monkeypatch.setattr(canary_analysis, "scrape", scrape)
    return box


def reconcile(body: dict):
    """One pass; the status patch is written back as the status subresource would take it."""
    out = reconcile_deployment.reconcile(body, CFG)
    write_status(body, out.status)
    return out


def available(fake: FakeKube, body: dict) -> None:
    reconcile(body)
    fake.make_ready("chat-r1")
    reconcile(body)
    assert body["status"]["phase"] == "Available"


def test_first_revision_starts_at_full_size_then_is_available(fake, metrics):
    body = deployment("chat", replicas=3)
    out = reconcile(body)
    assert body["status"]["phase"] == "Progressing" and body["status"]["revision"] == 1
    assert fake.replicas("chat-r1") == 3 and ("Service", "chat") in fake.objects
    assert [e[1] for e in out.events] == ["Created", "NewRevision"]
    fake.make_ready("chat-r1")
    reconcile(body)
    st = body["status"]
    assert (st["phase"], st["readyReplicas"], st["url"]) == (
        "Available",
        3,
        "http://chat.team-a.svc.cluster.local:8000/v1",
    )
    assert st["history"][0]["outcome"] == "Promoted"
    assert reconcile(body).status == {}  # steady: nothing to write


def test_canary_keeps_stable_until_ready_steps_and_promotes(fake, metrics):
    body = deployment("chat", replicas=4, rollout={"steps": STEPS})
    available(fake, body)
    body["spec"]["model"]["uri"] = "s3://bucket/export-2"
    out = reconcile(body)
    st = body["status"]
    assert (st["canaryRevision"], st["canaryWeight"]) == (2, 25)
    assert (fake.replicas("chat-r1"), fake.replicas("chat-r2")) == (4, 1)  # no stable pod given up yet
    assert "CanaryStarted" in [e[1] for e in out.events]
    reconcile(body)
    assert (fake.replicas("chat-r1"), fake.replicas("chat-r2")) == (4, 1)
    assert metrics["scraped"] == []  # not analysed before the canary is Ready
    fake.make_ready("chat-r2")
    out = reconcile(body)  # analysed, passes, steps to 100 %
    assert body["status"]["canaryWeight"] == 100 and "CanaryStep" in [e[1] for e in out.events]
    assert metrics["scraped"] == [["127.0.1.1"]]
    assert fake.replicas("chat-r1") == 3  # one canary pod Ready: one stable pod released
    fake.make_ready("chat-r2")  # all four canary pods Ready: the last step passes, promotion
    out = reconcile(body)
    st = body["status"]
    assert (st["revision"], st["previousRevision"], st["modelUri"]) == (2, 1, "s3://bucket/export-2")
    assert "canaryRevision" not in st and st["canaryWeight"] == 0
    assert [(h["revision"], h["outcome"]) for h in st["history"]] == [(1, "Promoted"), (2, "Promoted")]
    assert ("Deployment", "chat-r1") not in fake.objects and fake.replicas("chat-r2") == 4


def test_step_timing_survives_an_operator_restart(fake, metrics):
    """The pause is timed from the canary Deployment's annotation, not from operator memory."""
    steps = [{"weight": 50, "pauseSeconds": 3600}, {"weight": 100, "pauseSeconds": 0}]
    body = deployment("chat", replicas=2, rollout={"steps": steps})
    available(fake, body)
    body["spec"]["model"]["uri"] = "s3://bucket/export-2"
    reconcile(body)
    fake.make_ready("chat-r2")
    reconcile(body)
    note = json.loads(
        fake.objects[("Deployment", "chat-r2")]["metadata"]["annotations"][bd.ANNOTATION_CANARY_STEP]
    )
    assert note["weight"] == 50 and note["ready"]
    for _ in range(3):  # a restarted operator reconciles the same stored state again
        reconcile(body)
    again = json.loads(
        fake.objects[("Deployment", "chat-r2")]["metadata"]["annotations"][bd.ANNOTATION_CANARY_STEP]
    )
    assert again == note
    assert body["status"]["canaryWeight"] == 50 and "of the pause left" in body["status"]["message"]


def test_failed_analysis_rolls_back_and_is_not_retried(fake, metrics):
    body = deployment("chat", replicas=2, rollout={"steps": STEPS})
    available(fake, body)
    body["spec"]["model"]["uri"] = "s3://bucket/bad"
    reconcile(body)
    fake.make_ready("chat-r2")
    metrics["sample"] = ERRORS
    out = reconcile(body)
    st = body["status"]
    assert st["revision"] == 1 and "canaryRevision" not in st
    assert st["history"][-1]["outcome"] == "RolledBack"
    assert "error rate 0.200" in st["history"][-1]["reason"]
    assert ("Warning", "RolledBack") in [e[:2] for e in out.events]
    assert ("Deployment", "chat-r2") not in fake.objects and fake.replicas("chat-r1") == 2
    for _ in range(2):
        reconcile(body)
    assert "canaryRevision" not in body["status"] and len(body["status"]["history"]) == 2
    assert body["status"]["phase"] == "Available" and "rolled back" in body["status"]["message"]
    # A different model is rolled out again, as revision 3.
    body["spec"]["model"]["uri"] = "s3://bucket/fixed"
    reconcile(body)
    assert body["status"]["canaryRevision"] == 3


def test_a_newer_model_supersedes_the_canary(fake, metrics):
    body = deployment("chat", replicas=2, rollout={"steps": STEPS})
    available(fake, body)
    body["spec"]["model"]["uri"] = "s3://bucket/v2"
    reconcile(body)
    body["spec"]["model"]["uri"] = "s3://bucket/v3"
    out = reconcile(body)
    st = body["status"]
    assert st["canaryRevision"] == 3
    assert [(h["revision"], h["outcome"]) for h in st["history"]] == [
        (1, "Promoted"),
        (2, "Superseded"),
        (3, "InProgress"),
    ]
    assert ("Deployment", "chat-r2") not in fake.objects and fake.replicas("chat-r3") == 1
    assert "Superseded" in [e[1] for e in out.events]


def evaluation(name: str, run: str, passed: bool, uri: str, done: str) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {"model": {"trainingRunRef": {"name": run}}},
        "status": {
            "phase": "Succeeded",
            "passed": passed,
            "modelUri": uri,
            "completionTime": done,
            "message": "m",
        },
    }


def test_follows_the_newest_passing_evaluation(fake, metrics):
    body = deployment("chat", model={"trainingRunRef": {"name": "run"}, "followPassingEvaluations": True})
    reconcile(body)
    assert body["status"]["phase"] == "Waiting"
    assert body["status"]["message"] == "waiting for a passing Evaluation of TrainingRun run"
    fake.custom[("evaluations", "e1")] = evaluation("e1", "run", True, "s3://ckpt/1", "2026-01-01T00:00:00Z")
    available(fake, body)
    assert body["status"]["modelUri"] == "s3://ckpt/1"
    # A newer one that failed its gates and one of another run change nothing...
    fake.custom[("evaluations", "e2")] = evaluation("e2", "run", False, "s3://ckpt/2", "2026-01-02T00:00:00Z")
    fake.custom[("evaluations", "x")] = evaluation("x", "other", True, "s3://ckpt/x", "2026-01-03T00:00:00Z")
    reconcile(body)
    assert "canaryRevision" not in body["status"]
    # ...a newer passing one starts a canary.
    fake.custom[("evaluations", "e3")] = evaluation("e3", "run", True, "s3://ckpt/3", "2026-01-04T00:00:00Z")
    reconcile(body)
    assert body["status"]["canaryRevision"] == 2
    assert body["status"]["history"][-1]["reason"] == "canary from Evaluation e3"


def test_a_failed_gate_blocks_and_a_failed_run_fails(fake, metrics):
    body = deployment("chat", model={"evaluationRef": {"name": "ev"}})
    fake.custom[("evaluations", "ev")] = evaluation("ev", "run", False, "s3://ckpt/1", "2026-01-01T00:00:00Z")
    reconcile(body)
    assert body["status"]["phase"] == "Waiting"
    cond = next(c for c in body["status"]["conditions"] if c["type"] == "Waiting")
    assert cond["reason"] == "EvaluationNotPassed"
    assert not [k for k in fake.objects if k[0] == "Deployment"]
    run_body = deployment("serve-run", model={"trainingRunRef": {"name": "run"}})
    fake.custom[("trainingruns", "run")] = {
        "metadata": {"name": "run"},
        "status": {"phase": "Failed", "message": "OOM"},
    }
    reconcile(run_body)
    assert run_body["status"]["phase"] == "Failed"
    assert run_body["status"]["message"] == "spec.model.trainingRunRef: TrainingRun run failed: OOM"


def test_autoscaling_hpa_on_the_stable_revision_and_paused_during_a_canary(fake, metrics):
    body = deployment(
        "chat", autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 5}, rollout={"steps": STEPS}
    )
    available(fake, body)
    hpa = fake.objects[("HorizontalPodAutoscaler", "chat-serve")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "chat-r1" and fake.replicas("chat-r1") == 2
    fake.objects[("Deployment", "chat-r1")]["spec"]["replicas"] = 4  # the HPA scaled up
    reconcile(body)
    assert body["status"]["replicas"] == 4
    body["spec"]["model"]["uri"] = "s3://bucket/v2"
    reconcile(body)
    assert ("HorizontalPodAutoscaler", "chat-serve") not in fake.objects
    assert (fake.replicas("chat-r1"), fake.replicas("chat-r2")) == (4, 1)


def test_a_canary_not_ready_by_the_deadline_rolls_back(fake, metrics, monkeypatch):
    body = deployment("chat", replicas=2, rollout={"steps": STEPS})
    available(fake, body)
    body["spec"]["model"]["uri"] = "s3://bucket/slow"
    reconcile(body)
    reconcile(body)
    assert body["status"]["canaryRevision"] == 2  # still waiting for its pod
    monkeypatch.setattr(reconcile_deployment, "CANARY_READY_DEADLINE_S", -1)
    reconcile(body)
    rec = body["status"]["history"][-1]
    assert (rec["revision"], rec["outcome"]) == (2, "RolledBack")
    assert rec["reason"] == "not Ready within -1 s (0/1 Ready)"
    assert ("Deployment", "chat-r2") not in fake.objects and fake.replicas("chat-r1") == 2


# ---- runtime vllm: the export first, once per checkpoint
STEP1 = "s3://bucket/runs/tiny/checkpoints/step-00000100"
STEP2 = "s3://bucket/runs/tiny/checkpoints/step-00000200"


def vllm(name: str = "chat", uri: str = STEP1, **spec) -> dict:
    return deployment(name, runtime="vllm", model={"uri": uri}, resources={"gpus": 1}, replicas=1, **spec)


def exported(fake: FakeKube, step: str) -> None:
    """The export Job's work: the marker under the step folder."""
    fake.files[f"{step}/hf/EXPORTED"] = {"checkpoint": step, "step": 100, "dtype": "float32", "files": []}


def jobs(fake: FakeKube) -> list[str]:
    return sorted(name for kind, name in fake.objects if kind == "Job")


def test_vllm_exports_the_checkpoint_once_then_serves_the_export(fake, metrics):
    body = vllm()
    out = reconcile(body)
    (job,) = jobs(fake)
    assert job == export.job_name(STEP1)
    assert (
        fake.objects[("Job", job)]["spec"]["template"]["spec"]["containers"][0]["command"][-1]
        == f"{STEP1}/hf"
    )
    st = body["status"]
    assert st["phase"] == "Waiting" and f"Job {job} exporting {STEP1} to {STEP1}/hf" in st["message"]
    assert next(c for c in st["conditions"] if c["type"] == "Waiting")["reason"] == "Exporting"
    assert [e[1] for e in out.events].count("Exporting") == 1  # the phase change's
    assert not [k for k in fake.objects if k[0] == "Deployment"]  # nothing to serve yet
    reconcile(body)  # still exporting: the Job is not made again
    assert [c for c in fake.calls if c[1] == "Job"] == [("apply", "Job", job)]
    exported(fake, STEP1)
    reconcile(body)
    st = body["status"]
    assert (st["phase"], st["revision"], st["modelUri"]) == ("Progressing", 1, STEP1)
    assert "Waiting" not in [c["type"] for c in st["conditions"]]
    dep = fake.objects[("Deployment", "chat-r1")]
    assert dep["metadata"]["annotations"]["capstan.dev/served-uri"] == f"{STEP1}/hf"
    fake.make_ready("chat-r1")
    reconcile(body)
    assert body["status"]["phase"] == "Available"


def test_a_second_deployment_of_the_same_checkpoint_reuses_its_export_or_its_job(fake, metrics):
    first = vllm("chat")
    reconcile(first)
    second = vllm("chat-b")
    reconcile(second)  # the first one's Job is still exporting: wait on it, make no other
    assert jobs(fake) == [export.job_name(STEP1)]
    assert second["status"]["phase"] == "Waiting" and export.job_name(STEP1) in second["status"]["message"]
    exported(fake, STEP1)
    del fake.objects[("Job", export.job_name(STEP1))]  # even with the Job gone, the marker is enough
    third = vllm("chat-c")
    reconcile(third)
    assert jobs(fake) == [] and fake.replicas("chat-c-r1") == 1


def test_a_failed_export_fails_the_deployment_with_the_pods_log(fake, metrics):
    body = vllm()
    reconcile(body)
    job = export.job_name(STEP1)
    fake.objects[("Job", job)]["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    fake.add(
        {
            "kind": "Pod",
            "metadata": {"name": f"{job}-x", "namespace": "team-a", "labels": {"job-name": job}},
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {"name": "export", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
                ],
            },
        }
    )
    fake.logs[f"{job}-x"] = "PermissionError: s3://bucket/runs: Access Denied"
    reconcile(body)
    st = body["status"]
    assert st["phase"] == "Failed"
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ExportFailed" and "Access Denied" in failed["message"]
    assert f"delete Job {job} to try again" in failed["message"]
    assert not [k for k in fake.objects if k[0] == "Deployment"]


def test_vllm_refuses_a_checkpoint_root_and_serves_a_given_export_as_is(fake, metrics):
    root = vllm(uri="s3://bucket/runs/tiny/checkpoints")
    reconcile(root)
    assert root["status"]["phase"] == "Failed" and "is neither" in root["status"]["message"]
    given = vllm("given", uri="s3://bucket/exports/tiny")
    fake.files["s3://bucket/exports/tiny/config.json"] = {"architectures": ["LlamaForCausalLM"]}
    reconcile(given)
    assert jobs(fake) == [] and given["status"]["revision"] == 1


def test_vllm_canary_waits_for_its_export_while_the_stable_serves(fake, metrics):
    exported(fake, STEP1)
    body = vllm(rollout={"steps": STEPS})
    available(fake, body)
    body["spec"]["model"]["uri"] = STEP2
    out = reconcile(body)
    assert [e[1] for e in out.events] == ["Exporting"]
    st = body["status"]
    assert st["phase"] == "Available" and "canaryRevision" not in st
    progressing = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "Exporting" and f"{STEP2} is not rolled out yet" in progressing["message"]
    assert jobs(fake) == [export.job_name(STEP2)] and fake.replicas("chat-r1") == 1
    exported(fake, STEP2)
    reconcile(body)
    assert body["status"]["canaryRevision"] == 2
    fake.make_ready("chat-r2")
    reconcile(body)
    assert metrics["runtimes"] and set(metrics["runtimes"]) == {"vllm"}  # vLLM's metric names


def test_pods_that_are_not_ready_are_named_with_why(fake, metrics):
    exported(fake, STEP1)
    body = vllm()
    reconcile(body)
    labels = fake.objects[("Deployment", "chat-r1")]["spec"]["template"]["metadata"]["labels"]
    unschedulable = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    fake.add(
        {
            "kind": "Pod",
            "metadata": {"name": "chat-r1-abc", "labels": labels},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": unschedulable,
                    }
                ],
            },
        }
    )
    reconcile(body)
    st = body["status"]
    assert st["phase"] == "Progressing"
    assert st["message"] == f"revision 1: 0/1 Ready; waiting for chat-r1-abc (Unschedulable: {unschedulable})"
    fake.objects[("Pod", "chat-r1-abc")]["status"] = {
        "phase": "Pending",
        "initContainerStatuses": [{"name": "fetch-model", "ready": False, "state": {"running": {}}}],
    }
    reconcile(body)
    assert body["status"]["message"].endswith("waiting for chat-r1-abc (init container fetch-model running)")


def _check(fake: FakeKube, uri: str, passed: bool, on_regression: str = "none") -> None:
    """A scheduled Evaluation of the Deployment chat whose newest run was of `uri`."""
    fake.custom[("evaluations", "watch")] = {
        "metadata": {"name": "watch"},
        "spec": {"model": {"deploymentRef": {"name": "chat"}}, "onRegression": on_regression},
        "status": {
            "history": [
                {
                    "time": "2026-12-06T05:00:00Z",
                    "modelUri": uri,
                    "passed": passed,
                    "failedGates": ["task.qa.acc"],
                }
            ]
        },
    }


def _promote_second_model(fake: FakeKube, body: dict) -> None:
    available(fake, body)
    body["spec"]["model"]["uri"] = "s3://bucket/export-2"
    reconcile(body)
    fake.make_ready("chat-r2")
    reconcile(body)
    fake.make_ready("chat-r2")
    reconcile(body)
    assert (body["status"]["revision"], body["status"]["modelUri"]) == (2, "s3://bucket/export-2")


def test_a_failed_scheduled_evaluation_degrades_the_deployment_once(fake, metrics):
    body = deployment("chat", replicas=1, rollout={"steps": STEPS})
    _promote_second_model(fake, body)
    _check(fake, "s3://bucket/export", passed=False)  # a run of the model served before: ignored
    reconcile(body)
    assert not [c for c in body["status"]["conditions"] if c["type"] == "Degraded"]
    _check(fake, "s3://bucket/export-2", passed=False)
    out = reconcile(body)
    degraded = next(c for c in body["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "EvaluationFailed"
    assert (
        "Evaluation watch of s3://bucket/export-2" in degraded["message"]
        and "task.qa.acc" in degraded["message"]
    )
    assert [e[:2] for e in out.events] == [("Warning", "Regression")]
    assert reconcile(body).events == []  # said once
    assert body["status"]["modelUri"] == "s3://bucket/export-2"  # onRegression none: still served
    _check(fake, "s3://bucket/export-2", passed=True)  # the next run passes: no longer degraded
    reconcile(body)
    assert not [c for c in body["status"]["conditions"] if c["type"] == "Degraded"]


def test_on_regression_rollback_returns_to_the_last_promoted_revision(fake, metrics):
    body = deployment("chat", replicas=1, rollout={"steps": STEPS})
    _promote_second_model(fake, body)
    _check(fake, "s3://bucket/export-2", passed=False, on_regression="rollback")
    out = reconcile(body)
    assert ("Warning", "RolledBack") in [e[:2] for e in out.events]
    st = body["status"]
    assert st["canaryRevision"] == 3 and fake.objects[("Deployment", "chat-r3")]
    assert [(h["revision"], h["modelUri"], h["outcome"]) for h in st["history"]][:2] == [
        (1, "s3://bucket/export", "Promoted"),
        (2, "s3://bucket/export-2", "RolledBack"),
    ]
    fake.make_ready("chat-r3")
    reconcile(body)
    fake.make_ready("chat-r3")
    reconcile(body)
    assert (body["status"]["revision"], body["status"]["modelUri"]) == (3, "s3://bucket/export")
    # The spec still names export-2, which was rolled back: it is not rolled out again.
    reconcile(body)
    assert body["status"]["modelUri"] == "s3://bucket/export" and "canaryRevision" not in body["status"]


def test_drift_of_live_prompts_sets_the_drift_condition(fake, metrics, tmp_path, monkeypatch):
    """The reference comes from the model's capstan.json and its dataset's manifest; the live
    statistics from the pods (scrape is faked here; tests/unit/serving/test_drift_metrics.py
    reads a real server's)."""
    import dataclasses

    from capstan_api.drift import PromptStats
    from capstan_operator.deployment import drift

    model, data = tmp_path / "model", tmp_path / "data"
    model.mkdir(), data.mkdir()
    ref = PromptStats()
    for n in [10] * 50 + [40] * 50:
        ref.add(n, 0)
    (data / "manifest.json").write_text(json.dumps({"stats": {"promptStats": ref.to_wire()}}))
    meta = {"dataset": [{"uri": f"file://{data}"}], "validation": {"evalLoss": 2.0}}
    (model / "capstan.json").write_text(json.dumps(meta))
    live = {"stats": PromptStats()}
    monkeypatch.setattr(drift, "scrape", lambda ips, port: (live["stats"], []))
    cfg = dataclasses.replace(CFG, allowed_uri_schemes=("file",))
    body = deployment(
        "chat", replicas=1, model={"uri": f"file://{model}"}, drift={"enabled": True, "minPrompts": 20}
    )

    def run():
        out = reconcile_deployment.reconcile(body, cfg)
        write_status(body, out.status)
        return out

    run()
    fake.make_ready("chat-r1")
    run()
    cond = next(c for c in body["status"]["conditions"] if c["type"] == "Drift")
    assert (cond["status"], cond["reason"]) == ("Unknown", "TooFewPrompts")
    same = PromptStats(surprisal=2.1)
    for n in [10] * 30 + [40] * 30:
        same.add(n, 0)
    live["stats"] = same
    run()
    cond = next(c for c in body["status"]["conditions"] if c["type"] == "Drift")
    assert cond["status"] == "False" and body["status"]["drift"]["prompts"] == 60
    assert body["status"]["drift"]["surprisalChange"] == 0.05
    shifted = PromptStats(surprisal=4.0)
    for n in [300] * 60:
        shifted.add(n, 30)
    live["stats"] = shifted
    out = run()
    cond = next(c for c in body["status"]["conditions"] if c["type"] == "Drift")
    assert (cond["status"], cond["reason"]) == ("True", "PromptsDrifted") and body["status"]["drift"][
        "score"
    ] > 1
    assert ("Warning", "PromptsDrifted") in [e[:2] for e in out.events]
    assert ("Warning", "PromptsDrifted") not in [e[:2] for e in run().events]  # said once
