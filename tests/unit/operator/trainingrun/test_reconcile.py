"""The TrainingRun reconciler's decisions, on an in-memory cluster: create the gang, wait for it,
time it out, recreate it after a lost pod (counting restarts), fail at once on a bad spec, follow
progress, finish, suspend, and do nothing once finished."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from capstan_operator import children, kube
from capstan_operator.config import OperatorConfig
from capstan_operator.status import StatusDraft
from capstan_operator.trainingrun import build
from capstan_operator.trainingrun.reconcile import _report_unreadable, progress_fields, reconcile
from capstan_operator.trainingrun.resolve import checkpoint_taken
from tests.unit.operator.fake_kube import FakeKube, fake_kube
from tests.unit.operator.resources import trainingrun

__all__ = ["fake_kube"]  # fixture
CFG = OperatorConfig(gang_backoff_seconds=7)
PROGRESS = "s3://bucket/ckpt/progress.json"


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(age_s: float = 1, of: dict | None = None, **status) -> dict:
    """The gang's Job, made from the spec of `of` (default run())."""
    made_from = {children.ANNOTATION_SPEC_HASH: build.spec_hash(of or run())}
    return {
        "kind": "Job",
        "metadata": {"name": "llm-train", "creationTimestamp": ago(age_s), "annotations": made_from},
        "spec": {"suspend": False},
        "status": status,
    }


def pod(
    index: int,
    phase: str = "Running",
    deleting: float | None = None,
    init_exit: int | None = None,
    exit: int | None = None,
) -> dict:
    """A gang pod; `deleting`: seconds since its deletionTimestamp (the end of its grace period)."""
    labels = {
        **children.pod_labels(run(), build.COMPONENT),
        "batch.kubernetes.io/job-completion-index": str(index),
    }
    meta = {"name": f"llm-train-{index}-x", "namespace": "team-a", "labels": labels}
    if deleting is not None:
        meta["deletionTimestamp"] = ago(deleting)
    status: dict = {"phase": phase}
    if init_exit is not None:
        term = {"exitCode": init_exit, "reason": "Error"}
        status["initContainerStatuses"] = [{"name": "validate", "state": {"terminated": term}}]
    if exit is not None:
        term = {"exitCode": exit, "reason": "Error"}
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": term}}]
    return {"kind": "Pod", "metadata": meta, "status": status}


def run(status: dict | None = None, **spec) -> dict:
    """The TrainingRun; with a status, one that has started (its children were created)."""
    body = trainingrun("llm", failurePolicy={"maxRestarts": 2}, **spec)
    body["status"] = {} if status is None else {"startTime": ago(60), **status}
    return body


def cond(out, type_: str) -> dict:
    return next(c for c in out.status["conditions"] if c["type"] == type_)


def test_first_reconcile_creates_configmap_service_and_job(fake_kube: FakeKube):
    out = reconcile(run(), CFG)
    assert fake_kube.calls == [
        ("apply", "ConfigMap", "llm-train"),
        ("apply", "Service", "llm-train"),
        ("apply", "Job", "llm-train"),
    ]
    assert out.status["phase"] == "Scheduling" and out.status["startTime"]
    assert fake_kube.lists == 0, "a run that never started has nothing to list"
    assert cond(out, "GangScheduled")["message"] == "0 of 2 pods running"
    assert ("Normal", "Created", "Job llm-train: 2 pod(s) x 2 process(es)") in out.events
    assert out.requeue_after is not None
    # What reverse lineage reads: the data this gang trains on.
    assert out.status["trainedOn"] == [d["uri"] for d in run()["spec"]["datasets"]]


def test_a_later_gang_keeps_the_data_the_first_trained_on(fake_kube: FakeKube):
    assert "trainedOn" not in reconcile(run({"trainedOn": ["s3://x/1/manifest.json"]}), CFG).status


def test_all_pods_running_reports_progress(fake_kube: FakeKube):
    fake_kube.add(job())
    fake_kube.add(pod(0)), fake_kube.add(pod(1))
    fake_kube.files[PROGRESS] = {
        "step": 7,
        "totalSteps": 20,
        "loss": 4.2,
        "tokensSeen": 3584,
        "worldSize": 4,
        "lastCheckpoint": {"uri": "s3://bucket/ckpt/step-00000005", "step": 5},
        "mfu": None,
    }
    out = reconcile(run({"phase": "Scheduling"}), CFG)
    s = out.status
    assert (s["phase"], s["step"], s["progress"], s["nodes"], s["worldSize"]) == ("Running", 7, "7/20", 2, 4)
    assert s["lastCheckpoint"]["step"] == 5 and "mfu" not in s
    assert cond(out, "GangScheduled")["reason"] == "AllPodsRunning"
    assert out.requeue_after <= 30  # progress at least every 30 s
    assert fake_kube.calls == []


def test_a_ready_gang_by_the_jobs_counters_is_not_listed(fake_kube: FakeKube):
    fake_kube.add(job(active=2, ready=2))
    out = reconcile(run({"phase": "Scheduling"}), CFG)
    assert out.status["phase"] == "Running" and fake_kube.lists == 0
    assert cond(out, "GangScheduled")["reason"] == "AllPodsRunning"
    # A pod being deleted shows in the counters, so the pods are listed and the loss is seen.
    fake_kube.add(job(active=1, ready=2, terminating=1))
    fake_kube.add(pod(0)), fake_kube.add(pod(1, deleting=60))
    out = reconcile(run({"phase": "Running"}), CFG)
    assert fake_kube.lists == 1 and out.status["restarts"] == 1


def test_a_partial_gang_waits_then_times_out_and_backs_off(fake_kube: FakeKube):
    body = run({"phase": "Scheduling"}, scheduling={"gangTimeoutSeconds": 60})
    fake_kube.add(job(age_s=10, of=body))
    fake_kube.add(pod(0)), fake_kube.add(pod(1, phase="Pending"))
    out = reconcile(body, CFG)
    assert fake_kube.calls == [] and out.requeue_after <= 5
    assert cond(out, "GangScheduled")["message"].startswith("1 of 2 pods running")

    fake_kube.add(job(age_s=120))
    out = reconcile(run({"phase": "Scheduling"}, scheduling={"gangTimeoutSeconds": 60}), CFG)
    assert fake_kube.calls == [("delete", "Job", "llm-train", "Foreground")]
    gang = cond(out, "GangScheduled")
    assert (gang["status"], gang["reason"]) == ("False", "GangTimeout")
    assert "not all pods running within 60 s (1 of 2 pods running" in gang["message"]
    assert out.requeue_after == 7

    # The gang is gone; the next reconcile waits out the backoff before creating it again.
    fake_kube.objects.clear()
    again = reconcile(run(out.status), CFG)
    assert fake_kube.calls == [("delete", "Job", "llm-train", "Foreground")] and 0 < again.requeue_after <= 7


def test_pods_that_cannot_start_are_named_then_fail_the_run_at_the_gang_timeout(fake_kube: FakeKube):
    body = run({"phase": "Scheduling"}, scheduling={"gangTimeoutSeconds": 60})
    stuck = pod(1, phase="Pending")
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "reg/trainer:typo"'}
    stuck["status"]["containerStatuses"] = [
        {"name": "trainer", "image": "reg/trainer:typo", "state": {"waiting": waiting}}
    ]
    fake_kube.add(job(age_s=10, of=body)), fake_kube.add(pod(0)), fake_kube.add(stuck)
    out = reconcile(body, CFG)
    assert fake_kube.calls == [] and out.status["phase"] == "Pending"
    assert (
        "cannot start: ImagePullBackOff" in out.status["message"]
        and "reg/trainer:typo" in out.status["message"]
    )

    fake_kube.add(job(age_s=120, of=body))
    out = reconcile(body, CFG)
    assert fake_kube.calls == [("delete", "Job", "llm-train", "Foreground")]
    failed = cond(out, "Failed")
    assert out.status["phase"] == "Failed" and failed["reason"] == "ImagePullBackOff"
    assert failed["message"].startswith(
        "pods did not start within gangTimeoutSeconds (60 s): pod llm-train-1-x"
    )


def test_a_lost_pod_recreates_the_gang_and_counts_a_restart(fake_kube: FakeKube):
    fake_kube.add(job())
    fake_kube.add(pod(0)), fake_kube.add(pod(1, deleting=60))
    out = reconcile(run({"phase": "Running", "restarts": 0}), CFG)
    assert fake_kube.calls == [("delete", "Job", "llm-train", "Foreground")]
    assert out.status["restarts"] == 1
    [(kind, reason, message)] = [e for e in out.events if e[1] == "GangRestart"]
    assert kind == "Warning" and message == "restart 1: pod llm-train-1-x was deleted (node or pod lost)"


def test_a_deleted_pod_still_checkpointing_is_waited_for(fake_kube: FakeKube):
    fake_kube.add(job(active=1, ready=1, terminating=1))
    fake_kube.add(pod(0)), fake_kube.add(pod(1, deleting=-20))  # 20 s of grace left
    out = reconcile(run({"phase": "Running", "restarts": 0}), CFG)
    assert fake_kube.calls == [] and "restarts" not in out.status
    assert out.status["message"] == "pod llm-train-1-x is stopping (checkpointing the step it reached)"


def test_pods_stopped_after_a_checkpoint_recreate_the_gang_without_a_restart(fake_kube: FakeKube):
    """Exit 4 (SIGTERM, checkpoint committed) costs nothing: even with no restarts left."""
    fake_kube.add(job(failed=2, conditions=[{"type": "Failed", "status": "True", "message": "BackoffLimit"}]))
    fake_kube.add(pod(0, phase="Failed", exit=4)), fake_kube.add(pod(1, phase="Failed", deleting=-5, exit=4))
    out = reconcile(run({"phase": "Running", "restarts": 2}), CFG)
    assert fake_kube.calls == [("delete", "Job", "llm-train", "Foreground")]
    assert "restarts" not in out.status and out.status["phase"] == "Scheduling"
    [(kind, reason, _)] = [e for e in out.events if e[1] in ("GangRecreated", "GangRestart")]
    assert (kind, reason) == ("Normal", "GangRecreated")

    # The Job failed by its exit-4 rule and its pods are already gone: the same.
    fake_kube.objects.clear()
    fake_kube.calls.clear()
    by_rule = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "exit code 4"}
    fake_kube.add(job(failed=1, conditions=[by_rule]))
    out = reconcile(run({"phase": "Running", "restarts": 2}), CFG)
    assert fake_kube.calls == [("delete", "Job", "llm-train", "Foreground")] and "restarts" not in out.status

    # One pod that crashed among them spends a restart (here the last one: the run fails).
    fake_kube.add(job(failed=2, conditions=[{"type": "Failed", "status": "True", "message": "BackoffLimit"}]))
    fake_kube.add(pod(0, phase="Failed", exit=4)), fake_kube.add(pod(1, phase="Failed", exit=1))
    out = reconcile(run({"phase": "Running", "restarts": 2}), CFG)
    assert out.status["phase"] == "Failed" and cond(out, "Failed")["reason"] == "RestartsExhausted"


def test_an_evicted_pod_recreates_the_gang_without_a_restart(fake_kube: FakeKube):
    """Spot reclaim or a drain (DisruptionTarget) is not the trainer's failure, even when the pod
    was killed before its checkpoint was written: no restart is spent, even the last."""
    by_rule = {
        "type": "Failed",
        "status": "True",
        "reason": "PodFailurePolicy",
        "message": "DisruptionTarget",
    }
    fake_kube.add(job(failed=1, conditions=[by_rule]))
    evicted = pod(1, phase="Failed", exit=137)
    evicted["status"]["conditions"] = [
        {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    ]
    fake_kube.add(pod(0)), fake_kube.add(evicted)
    out = reconcile(run({"phase": "Running", "restarts": 2}), CFG)
    assert fake_kube.calls == [("delete", "Job", "llm-train", "Foreground")]
    assert "restarts" not in out.status and out.status["phase"] == "Scheduling"

    # The same pod crashed without being evicted: the last restart is gone, the run fails.
    fake_kube.objects.clear()
    fake_kube.add(job(failed=1, conditions=[{"type": "Failed", "status": "True", "message": "BackoffLimit"}]))
    fake_kube.add(pod(0)), fake_kube.add(pod(1, phase="Failed", exit=137))
    out = reconcile(run({"phase": "Running", "restarts": 2}), CFG)
    assert cond(out, "Failed")["reason"] == "RestartsExhausted"


def test_an_elastic_gang_counts_the_pods_its_job_replaced_in_the_one_budget(fake_kube: FakeKube):
    """Two crashed pods replaced by the Job controller, then pod 0 lost: the crashes count."""
    fake_kube.add(job(active=1, ready=1, failed=2, of=run(**ELASTIC)))
    fake_kube.add(pod(0, deleting=60)), fake_kube.add(pod(1))
    out = reconcile(run({"phase": "Running", "restarts": 0}, **ELASTIC), CFG)
    assert out.status["restarts"] == 2
    # the next gang's Job may replace what is left of maxRestarts 2: nothing
    body = run({"restarts": 2}, **ELASTIC)
    [job_] = [
        c
        for c in build.build(body, build.TrainingRunSpec.model_validate(body["spec"]), CFG)
        if c["kind"] == "Job"
    ]
    assert job_["spec"]["backoffLimit"] == 0


def test_restarts_used_up_fail_the_run(fake_kube: FakeKube):
    fake_kube.add(job(failed=1, conditions=[{"type": "Failed", "status": "True", "message": "BackoffLimit"}]))
    out = reconcile(run({"phase": "Running", "restarts": 2}), CFG)
    assert out.status["phase"] == "Failed" and fake_kube.calls == []
    failed = cond(out, "Failed")
    assert failed["reason"] == "RestartsExhausted"
    assert failed["message"] == "2 gang restarts used up; last failure: Job llm-train failed: BackoffLimit"
    assert out.status["completionTime"]


def test_an_invalid_config_exit_fails_at_once_with_the_log(fake_kube: FakeKube):
    fake_kube.add(job())
    bad = fake_kube.add(pod(0, phase="Failed", init_exit=3))
    fake_kube.logs[bad["metadata"]["name"]] = "spec.optimizer: global batch 512 is not divisible\n"
    out = reconcile(run({"phase": "Scheduling"}), CFG)
    assert out.status["phase"] == "Failed" and cond(out, "Failed")["reason"] == "InvalidSpec"
    assert "container validate exited with code 3" in out.status["message"]
    assert "global batch 512 is not divisible" in out.status["message"]
    assert fake_kube.calls == [] and "restarts" not in out.status


def test_a_complete_job_succeeds_with_the_final_figures(fake_kube: FakeKube):
    fake_kube.add(job(conditions=[{"type": "Complete", "status": "True"}]))
    fake_kube.files[PROGRESS] = {"step": 20, "totalSteps": 20, "phase": "EarlyStopped", "loss": 3.1}
    out = reconcile(run({"phase": "Running"}), CFG)
    assert (out.status["phase"], out.status["step"], out.status["nodes"]) == ("EarlyStopped", 20, 0)
    assert out.status["completionTime"] and out.requeue_after is None
    # Finished at this generation: the next reconcile touches nothing.
    fake_kube.objects.clear()
    assert reconcile(run({**out.status, "observedGeneration": 1}), CFG).status == {}


def test_suspend_deletes_the_gang_and_resume_clears_the_condition(fake_kube: FakeKube):
    fake_kube.add(job())
    fake_kube.add(pod(0))
    out = reconcile(run({"phase": "Running"}, suspend=True), CFG)
    assert fake_kube.calls == [("delete", "Job", "llm-train", "Foreground")]
    assert out.status["phase"] == "Suspended" and cond(out, "Suspended")["status"] == "True"
    assert out.requeue_after is not None  # a pod still terminates: look again

    fake_kube.objects.clear()
    stored = {**out.status, "observedGeneration": 1}
    assert reconcile(run(stored, suspend=True), CFG).requeue_after is None
    resumed = reconcile(run(stored), CFG)
    assert cond(resumed, "Suspended")["status"] == "False" and resumed.status["phase"] == "Scheduling"
    assert ("apply", "Job", "llm-train") in fake_kube.calls


def test_waits_for_a_dataset_without_touching_children(fake_kube: FakeKube):
    out = reconcile(run(datasets=[{"datasetRef": "web"}]), CFG)
    assert out.status["phase"] == "Waiting" and fake_kube.calls == []
    assert cond(out, "Waiting")["message"] == "waiting for Dataset web (not found)"


def test_progress_fields_drop_what_the_trainer_has_not_reported():
    assert progress_fields({"step": 3}, None) == {
        "step": 3,
        "progress": "3",
        "tokensSeen": 0,
        "overfitting": False,
    }


def test_the_overfitting_signal_reaches_status():
    assert progress_fields({"step": 8, "evalLoss": 2.5, "overfitting": True}, None)["overfitting"] is True


def test_progress_fields_round_what_kubectl_get_shows():
    out = progress_fields({"step": 5, "totalSteps": 10, "loss": 3.2974588871002197, "mfu": 0.451234567}, 2)
    assert (out["loss"], out["mfu"], out["progress"], out["nodes"]) == (3.2975, 0.4512, "5/10", 2)


def test_an_unreadable_checkpoint_is_one_warning_event_and_stays_in_status():
    bad = {"uri": "s3://ck/run/step-00000300", "step": 300, "reason": "EOFError: Ran out of input"}
    draft = StatusDraft({"metadata": {"generation": 1}})
    _report_unreadable(draft, {"unreadableCheckpoints": [bad]})
    assert draft.events == [
        ("Warning", "CheckpointUnreadable", f"{bad['uri']} (step 300) could not be loaded: {bad['reason']}")
    ]
    assert draft.get("unreadableCheckpoints") == [bad]
    # The next reconcile reads the same progress.json: nothing new to say.
    again = StatusDraft({"metadata": {"generation": 1}, "status": {"unreadableCheckpoints": [bad]}})
    _report_unreadable(again, {"unreadableCheckpoints": [bad]})
    assert again.events == [] and "unreadableCheckpoints" not in again.fields


def test_a_second_live_run_on_one_checkpoint_uri_is_refused_naming_the_other(fake_kube: FakeKube):
    first = trainingrun("first")
    first["status"] = {"phase": "Running", "startTime": ago(60), "outputUri": "s3://bucket/ckpt"}
    fake_kube.custom[("trainingruns", "first")] = first
    out = reconcile(run(), CFG)
    assert out.status["phase"] == "Failed" and fake_kube.calls == []
    failed = cond(out, "Failed")
    assert failed["reason"] == "CheckpointUriInUse"
    assert failed["message"].startswith(
        "spec.checkpoint.uri s3://bucket/ckpt is already written by TrainingRun first"
    )

    # Once the other has finished (or uses another location) the run goes ahead.
    first["status"]["phase"] = "Succeeded"
    assert reconcile(run(), CFG).status["phase"] == "Scheduling"


def test_of_two_runs_created_together_on_one_uri_exactly_one_goes_ahead():
    a, b = trainingrun("a"), trainingrun("b")
    for body in (a, b):
        body["metadata"]["creationTimestamp"] = ago(5)
    taken = [checkpoint_taken(me, "s3://bucket/ckpt/", [a, b]) for me in (a, b)]
    assert taken[0] == "" and "TrainingRun a (Pending)" in taken[1]
    # A run that has started keeps its location against an older one that has not.
    b["status"] = {"startTime": ago(1), "outputUri": "s3://bucket/ckpt"}
    assert checkpoint_taken(b, "s3://bucket/ckpt", [a, b]) == ""


ELASTIC = {"resources": {"minNodes": 1, "maxNodes": 2, "nprocPerNode": 2}}


def test_an_elastic_gang_trains_on_when_a_pod_is_lost(fake_kube: FakeKube):
    fake_kube.add(job(active=1, ready=1, of=run(**ELASTIC)))
    fake_kube.add(pod(0)), fake_kube.add(pod(1, phase="Failed", deleting=5, exit=4))
    fake_kube.files[PROGRESS] = {"step": 12, "totalSteps": 40, "worldSize": 2}
    out = reconcile(run({"phase": "Running", "restarts": 0, "worldSize": 4}, **ELASTIC), CFG)
    assert fake_kube.calls == []  # no gang teardown: the Job controller replaces pod 1
    s = out.status
    assert (
        (s["nodes"], s["worldSize"]) == (1, 2) and "restarts" not in s and "phase" not in s
    )  # still Running
    gang = cond(out, "GangScheduled")
    assert (gang["status"], gang["reason"]) == ("True", "ElasticShrunk")
    assert "1 of 2 pods running (elastic, at least 1)" in gang["message"]
    assert ("Normal", "WorldSizeChanged", "world size 4 -> 2 at step 12") in out.events


def test_an_elastic_gang_without_pod_0_restarts(fake_kube: FakeKube):
    fake_kube.add(job(active=1, ready=1, of=run(**ELASTIC)))
    fake_kube.add(pod(0, deleting=60)), fake_kube.add(pod(1))
    out = reconcile(run({"phase": "Running", "restarts": 0}, **ELASTIC), CFG)
    # pod 0 holds the rendezvous store: the others cannot re-rendezvous without it
    assert fake_kube.calls == [("delete", "Job", "llm-train", "Foreground")]
    assert out.status["restarts"] == 1


def finished(fake: FakeKube, phase: str = "Succeeded", **spec) -> dict:
    """A run finished at generation 1 (its Job made from that spec), then edited: generation 2."""
    fake.add(job(conditions=[{"type": "Complete", "status": "True"}]))
    body = run({"phase": phase, "observedGeneration": 1, "completionTime": ago(5), "step": 20})
    body["spec"] |= spec
    body["metadata"]["generation"] = 2
    return body


def test_a_finished_run_with_more_steps_continues_from_its_checkpoint(fake_kube: FakeKube):
    body = finished(fake_kube, optimizer={**run()["spec"]["optimizer"], "totalSteps": 40})
    out = reconcile(body, CFG)
    # The gang goes (with its pods); the next one is made from the edited spec and resumes.
    assert fake_kube.calls == [("delete", "Job", "llm-train", "Foreground")]
    assert out.status["phase"] == "Scheduling" and out.status["completionTime"] is None
    assert [e[1] for e in out.events] == ["SpecChanged", "SpecChanged"]
    assert "continues from the newest checkpoint" in out.status["message"]
    fake_kube.objects.clear()
    fake_kube.calls.clear()
    out = reconcile({**body, "status": {**body["status"], **out.status}}, CFG)
    assert [c[1] for c in fake_kube.calls] == ["ConfigMap", "Service", "Job"]
    new = fake_kube.objects[("Job", "llm-train")]
    assert children.built_from(new) == build.spec_hash(body)
    env = {e["name"]: e.get("value") for e in new["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CAPSTAN_SPEC_HASH"] == build.spec_hash(body), "the launcher must not see the run as finished"


def test_a_finished_run_with_an_operator_only_edit_stays_finished(fake_kube: FakeKube):
    fake_kube.files[PROGRESS] = {"step": 20, "totalSteps": 20, "phase": "Succeeded"}
    body = finished(fake_kube, failurePolicy={"maxRestarts": 9})
    out = reconcile(body, CFG)
    assert fake_kube.calls == [] and "phase" not in out.status, "still Succeeded"
    assert out.status["observedGeneration"] == 2


def test_a_failed_run_whose_spec_is_edited_is_tried_again(fake_kube: FakeKube):
    fake_kube.add(job(failed=1, conditions=[{"type": "Failed", "status": "True", "message": "BackoffLimit"}]))
    body = run({"phase": "Failed", "observedGeneration": 1, "restarts": 2})
    body["spec"]["failurePolicy"] = {"maxRestarts": 5}  # operator-only, but the run had failed
    body["metadata"]["generation"] = 2
    body["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "RestartsExhausted"}]
    out = reconcile(body, CFG)
    assert fake_kube.calls == [("delete", "Job", "llm-train", "Foreground")]
    assert out.status["phase"] == "Scheduling"
    assert "Failed" not in [c["type"] for c in out.status["conditions"]]


def gpu_node(name: str, mib: str, pool: str = "gpu") -> dict:
    labels = {"pool": pool, "nvidia.com/gpu.memory": mib, "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    return {"kind": "Node", "metadata": {"name": name, "labels": labels}}


def big_run(**resources) -> dict:
    """8b at seqLen 8192 on 8 GPUs: 116.8 GiB per GPU without activation checkpointing."""
    return run(
        model={"preset": "8b"},
        optimizer={"microBatch": 2, "seqLen": 8192, "globalBatchTokens": 8192 * 16},
        resources={"minNodes": 1, "maxNodes": 1, "nprocPerNode": 8, "gpusPerNode": 8, **resources},
    )


def test_a_run_too_big_for_the_nodes_gpus_is_refused_before_any_pod(fake_kube: FakeKube):
    fake_kube.add(gpu_node("a", "81559"))
    fake_kube.add(gpu_node("small", "40960", pool="other"))  # not selected: its memory is not the limit
    out = reconcile(big_run(nodeSelector={"pool": "gpu"}), CFG)
    assert fake_kube.calls == []
    assert out.status["phase"] == "Failed"
    failed = cond(out, "Failed")
    assert failed["reason"] == "InsufficientGPUMemory"
    assert failed["message"].startswith("needs 116.8 GiB per GPU at 8 GPUs")
    assert failed["message"].endswith("nodes have 79.65 GiB: activationCheckpointing: full")
    plan = out.status["plan"]
    assert (plan["gpuMemoryGiB"], plan["fits"], plan["peakName"]) == (79.65, False, "H100")


def test_a_run_that_fits_gets_its_plan_and_its_gang(fake_kube: FakeKube):
    fake_kube.add(gpu_node("a", "81559"))
    body = big_run()
    body["spec"]["fsdp"] = {"activationCheckpointing": "full"}
    out = reconcile(body, CFG)
    assert ("apply", "Job", "llm-train") in fake_kube.calls
    assert out.status["plan"]["fits"] is True and out.status["plan"]["etaSeconds"] > 0


def test_a_cpu_run_gets_a_plan_and_no_node_listing(fake_kube: FakeKube):
    out = reconcile(run(), CFG)
    assert fake_kube.lists == 0 and ("apply", "Job", "llm-train") in fake_kube.calls
    plan = out.status["plan"]
    assert plan["gpus"] == 0 and plan["precision"] == "fp32" and "fits" not in plan


def test_nodes_that_cannot_be_listed_leave_the_gpu_memory_unknown(fake_kube: FakeKube, monkeypatch):
    def forbidden(selector=""):
        raise kube.ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(kube, "list_nodes", forbidden)
    out = reconcile(big_run(), CFG)
    assert ("apply", "Job", "llm-train") in fake_kube.calls
    assert "fits" not in out.status["plan"] and "gpuMemoryGiB" not in out.status["plan"]


def kueue_run(status: dict | None = None) -> dict:
    return run(status, scheduling={"scheduler": "kueue", "queueName": "team-q"})


def workload(*conditions: tuple[str, str, str, str]) -> dict:
    """Kueue's Workload for the Job uid `u1`, with (type, status, reason, message) conditions."""
    conds = [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions]
    meta = {
        "name": "job-llm-train-abcde",
        "creationTimestamp": ago(5),
        "labels": {"kueue.x-k8s.io/job-uid": "u1"},
    }
    return {"kind": "Workload", "metadata": meta, "status": {"conditions": conds}}


def kueue_job(suspend: bool) -> dict:
    j = job(of=kueue_run())
    j["metadata"]["uid"] = "u1"
    j["spec"]["suspend"] = suspend
    return j


def test_a_queued_kueue_job_shows_kueues_reason(fake_kube: FakeKube):
    fake_kube.add(kueue_job(suspend=True))
    msg = "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor gpu, 8 more needed"
    fake_kube.custom[("workloads", "w")] = workload(("QuotaReserved", "False", "Pending", msg))
    out = reconcile(kueue_run({"phase": "Pending"}), CFG)
    gang = cond(out, "GangScheduled")
    assert (out.status["phase"], gang["status"], gang["reason"]) == ("Scheduling", "False", "Queued")
    assert gang["message"] == f"queued in Kueue LocalQueue team-q: QuotaReserved (Pending): {msg}"
    assert fake_kube.calls == []


def test_a_gang_preempted_by_kueue_is_left_to_stop_and_wait_not_recreated(fake_kube: FakeKube):
    """Kueue suspended the running Job; its pods are stopping or stopped (exit 4): no failure,
    no restart, no deletion; status says it was preempted."""
    fake_kube.add(kueue_job(suspend=True))
    fake_kube.add(pod(0, phase="Failed", deleting=1, exit=4))
    fake_kube.add(pod(1, deleting=1))
    why = "Preempted to accommodate a workload (UID: x) due to prioritization in the ClusterQueue"
    fake_kube.custom[("workloads", "w")] = workload(
        ("Evicted", "True", "Preempted", why), ("QuotaReserved", "False", "Pending", "insufficient quota")
    )
    out = reconcile(kueue_run({"phase": "Running", "restarts": 0}), CFG)
    gang = cond(out, "GangScheduled")
    assert (out.status["phase"], gang["reason"]) == ("Scheduling", "Preempted")
    assert (
        f"Evicted (Preempted): {why}" in gang["message"] and "resumes from its checkpoint" in gang["message"]
    )
    assert fake_kube.calls == [] and "restarts" not in out.status
    assert [e[1] for e in out.events] == ["Preempted"]


def test_progress_fields_copy_the_sft_and_dpo_figures():
    figs = {
        "rewardsChosen": 0.123456789,
        "rewardsRejected": -0.5,
        "rewardsMargin": 0.623456789,
        "rewardsAccuracy": 0.9375,
        "evalRewardsAccuracy": 0.95,
    }
    out = progress_fields(
        {"step": 5, "lossTokens": 812, "dpo": figs, "trainableParams": 19456, "totalParams": 138560}, None
    )
    assert out["lossTokens"] == 812
    assert (out["trainableParams"], out["totalParams"]) == (19456, 138560)
    assert out["dpo"] == {**figs, "rewardsChosen": 0.1235, "rewardsMargin": 0.6235}
    # What the operator writes is what the status schema (and so the CRD) accepts.
    from capstan_api.status import TrainingRunStatus

    assert TrainingRunStatus.model_validate(out).dpo.rewards_accuracy == 0.9375
