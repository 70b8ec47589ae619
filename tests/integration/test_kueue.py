"""TrainingRuns queued by Kueue (built from its Go module, started for this module only) on the
real local cluster: 2 nodes x 4 GPUs (advertised by the node agent; the trainers run on CPU), a
ClusterQueue with those 8 GPUs of quota. The operator's reconciler runs in-process (driver)."""

from __future__ import annotations

import json

import pytest

from capstan_operator.trainingrun import reconcile as reconcile_trainingrun
from capstan_trainer import storage
from tests.support.kueue import condition, kueue, kueue_run, local_queue, workload
from tests.support.operator_env import driver, op_cfg, operator_cluster
from tests.support.trainingruns import data, run_yaml, status, trainer_start_record

pytestmark = pytest.mark.cluster
__all__ = ["data", "driver", "kueue", "local_queue", "op_cfg", "operator_cluster"]  # fixtures
PRIORITIES = {"capstan-test-low": 100, "capstan-test-high": 1000}


def gang(driver, name: str) -> dict:
    return driver.condition("trainingruns", name, "GangScheduled") or {}


def test_a_second_run_waits_for_quota_with_kueues_reason_then_runs(
    operator_cluster, namespace, driver, s3_bucket, data, local_queue
):
    operator_cluster.apply(
        run_yaml("first", f"{s3_bucket}/ckpt/first", {"uri": data}, steps=20, **kueue_run(local_queue)),
        namespace,
    )
    operator_cluster.apply(
        run_yaml("second", f"{s3_bucket}/ckpt/second", {"uri": data}, steps=6, **kueue_run(local_queue)),
        namespace,
    )
    driver.add("trainingruns", "first", reconcile_trainingrun.reconcile)
    driver.add("trainingruns", "second", reconcile_trainingrun.reconcile)
    queued = driver.run_until(
        "first Running and second queued by Kueue for lack of GPU quota",
        lambda: (
            driver.phase("trainingruns", "first") == "Running"
            and "insufficient unused quota" in (g := gang(driver, "second")).get("message", "")
            and g
        ),
        timeout=240,
    )
    print("second:", queued)
    assert (queued["status"], queued["reason"]) == ("False", "Queued")
    assert queued["message"].startswith(
        f"queued in Kueue LocalQueue {local_queue}: QuotaReserved (Pending): "
    )
    assert "nvidia.com/gpu" in queued["message"]
    assert driver.phase("trainingruns", "second") == "Scheduling"
    assert not operator_cluster.list("pods", namespace, "capstan.dev/owner=second")

    driver.run_until(
        "both runs to finish",
        lambda: all(driver.phase("trainingruns", n) in ("Succeeded", "Failed") for n in ("first", "second")),
        timeout=480,
    )
    assert (status(driver, "first")["phase"], status(driver, "second")["phase"]) == ("Succeeded", "Succeeded")
    assert status(driver, "second")["step"] == 6
    # Kueue admitted the second only once the first's Job had finished and freed the quota.
    first_job = operator_cluster.get("job", "first-train", namespace)
    second_job = operator_cluster.get("job", "second-train", namespace)
    admitted = condition(workload(operator_cluster, namespace, second_job), "Admitted")
    finished = condition(workload(operator_cluster, namespace, first_job), "Finished")
    assert admitted.get("status") == "True" and finished.get("status") == "True", (admitted, finished)
    assert admitted["lastTransitionTime"] >= finished["lastTransitionTime"], (admitted, finished)


def test_a_higher_priority_run_preempts_and_the_preempted_one_resumes_at_its_step(
    operator_cluster, namespace, driver, s3_bucket, data, local_queue
):
    for name, value in PRIORITIES.items():
        pc = {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
        }
        operator_cluster.apply(json.dumps(pc))
    low_ckpt = f"{s3_bucket}/ckpt/low"

    def low_spec(**more):
        spec = kueue_run(local_queue)
        spec["resources"]["priorityClassName"] = "capstan-test-low"
        return run_yaml("low", low_ckpt, {"uri": data}, steps=5000, every=5, **spec, **more)

    operator_cluster.apply(low_spec(), namespace)
    driver.add("trainingruns", "low", reconcile_trainingrun.reconcile)
    driver.run_until(
        "a committed checkpoint of TrainingRun low",
        lambda: (status(driver, "low").get("lastCheckpoint") or {}).get("step", 0) >= 5,
        timeout=300,
    )
    low_job = operator_cluster.get("job", "low-train", namespace)["metadata"]["uid"]
    high = kueue_run(local_queue)
    high["resources"]["priorityClassName"] = "capstan-test-high"
    operator_cluster.apply(
        run_yaml("high", f"{s3_bucket}/ckpt/high", {"uri": data}, steps=6, **high), namespace
    )
    driver.add("trainingruns", "high", reconcile_trainingrun.reconcile)
    preempted = driver.run_until(
        "TrainingRun low to be preempted by Kueue",
        lambda: (g := gang(driver, "low")).get("reason") == "Preempted" and g,
        timeout=120,
    )
    print("low:", preempted)
    assert "Evicted (Preempted): " in preempted["message"]
    driver.run_to_end("trainingruns", "high", timeout=360)
    assert status(driver, "high")["phase"] == "Succeeded", status(driver, "high")
    # The preempted trainers got SIGTERM and checkpointed the step they had reached.
    stopped = json.loads(storage.read_bytes(f"{low_ckpt}/progress.json"))
    assert stopped["phase"] == "Stopped" and stopped["lastCheckpoint"]["step"] == stopped["step"], stopped
    at_preemption = stopped["step"]
    driver.run_until(
        "TrainingRun low to be readmitted and write a new checkpoint",
        lambda: (
            driver.phase("trainingruns", "low") == "Running"
            and status(driver, "low")["lastCheckpoint"]["step"] > at_preemption
        ),
        timeout=300,
    )
    # Kueue resumed the same Job (no gang recreated by the operator, no restart spent) and the
    # trainer loaded the checkpoint of the step it was preempted at.
    assert operator_cluster.get("job", "low-train", namespace)["metadata"]["uid"] == low_job
    assert status(driver, "low").get("restarts", 0) == 0
    low_events = [e for e in driver.events if e[0] == "low"]
    assert not [e for e in low_events if e[2] in ("GangRestart", "GangRecreated")], low_events
    assert "Preempted" in [e[2] for e in low_events], low_events
    start = trainer_start_record(operator_cluster, namespace, "low")
    assert start["step"] == at_preemption and start["resumedFrom"], start
    operator_cluster.kubectl("delete", "trainingrun", "low", "-n", namespace, "--wait=false")


def test_kueue_evicts_a_gang_whose_pods_are_not_ready_and_the_native_guard_stays_off(
    operator_cluster, namespace, driver, s3_bucket, data, local_queue
):
    """Kueue's waitForPodsReady (45 s here) handles a gang that cannot start, not the operator's
    gangTimeoutSeconds (3 s): the gang is evicted and requeued by Kueue, never torn down by the
    operator, and runs once the nodes take pods again."""
    seen: list[str] = []

    def gang_reason() -> str:
        r = gang(driver, "held").get("reason", "")
        if r and (not seen or seen[-1] != r):
            seen.append(r)
        return r

    operator_cluster.kubectl("taint", "nodes", "--all", "capstan.dev/hold=1:NoSchedule")
    try:
        operator_cluster.apply(
            run_yaml(
                "held",
                f"{s3_bucket}/ckpt/held",
                {"uri": data},
                steps=6,
                **kueue_run(local_queue, gangTimeoutSeconds=3),
            ),
            namespace,
        )
        driver.add("trainingruns", "held", reconcile_trainingrun.reconcile)
        evicted = driver.run_until(
            "Kueue to evict TrainingRun held's gang (pods not Ready within waitForPodsReady)",
            lambda: gang_reason() == "Evicted" and gang(driver, "held"),
            timeout=180,
        )
        print("held:", evicted)
        assert "PodsReadyTimeout" in evicted["message"], evicted
        job_uid = operator_cluster.get("job", "held-train", namespace)["metadata"]["uid"]
    finally:
        operator_cluster.kubectl("taint", "nodes", "--all", "capstan.dev/hold-")
    driver.run_until(
        "TrainingRun held to be readmitted and finish",
        lambda: gang_reason() and driver.phase("trainingruns", "held") in ("Succeeded", "Failed"),
        timeout=360,
    )
    st = status(driver, "held")
    assert st["phase"] == "Succeeded" and st["step"] == 6, st
    assert "GangTimeout" not in seen and "Scheduling" in seen, seen  # admitted, pods Pending > 3 s
    assert operator_cluster.get("job", "held-train", namespace)["metadata"]["uid"] == job_uid
    assert st.get("restarts", 0) == 0, st


def test_a_deleted_pod_of_a_kueue_gang_recreates_it_without_spending_a_restart(
    operator_cluster, namespace, driver, s3_bucket, data, local_queue
):
    """Outside a preemption, a pod lost from a running Kueue gang (deleted: it checkpoints and
    exits 4, which a Kueue Job ignores) still makes the operator recreate the gang for free."""
    operator_cluster.apply(
        run_yaml(
            "lost", f"{s3_bucket}/ckpt/lost", {"uri": data}, steps=60, every=5, **kueue_run(local_queue)
        ),
        namespace,
    )
    driver.add("trainingruns", "lost", reconcile_trainingrun.reconcile)
    driver.run_until(
        "a committed checkpoint of TrainingRun lost",
        lambda: (status(driver, "lost").get("lastCheckpoint") or {}).get("step", 0) >= 5,
        timeout=300,
    )
    pods = operator_cluster.list(
        "pods", namespace, "capstan.dev/owner=lost,batch.kubernetes.io/job-completion-index=1"
    )
    operator_cluster.kubectl("delete", "pod", pods[0]["metadata"]["name"], "-n", namespace, "--wait=false")
    driver.run_to_end("trainingruns", "lost", timeout=420)
    st = status(driver, "lost")
    events = [e for e in driver.events if e[0] == "lost"]
    print("events of TrainingRun lost:", *events, sep="\n")
    assert st["phase"] == "Succeeded" and st["step"] == 60, st
    assert st.get("restarts", 0) == 0 and not [e for e in events if e[2] == "GangRestart"], events
