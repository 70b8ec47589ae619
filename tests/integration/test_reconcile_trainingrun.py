"""TrainingRun reconciled on the real API server: torchrun pods run by the node agent, data and
checkpoints in S3 (SeaweedFS). Sizes are tiny: the `test` preset, 32-token sequences, CPU (gloo)."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from kubernetes import client

from capstan_operator import kube
from capstan_operator.dataset import reconcile as reconcile_dataset
from capstan_operator.trainingrun import reconcile as reconcile_trainingrun
from capstan_trainer import storage
from tests.support.operator_env import dataset_yaml, driver, op_cfg, operator_cluster, upload_corpus
from tests.support.trainingruns import data, run_yaml, status, trainer_start_record
from tests.unit.trainer.helpers import torchrun

pytestmark = pytest.mark.cluster
__all__ = ["data", "driver", "op_cfg", "operator_cluster"]  # fixtures


def test_waits_for_its_dataset_then_trains(operator_cluster, namespace, driver, s3_bucket):
    source = upload_corpus(s3_bucket)
    operator_cluster.apply(
        run_yaml("after", f"{s3_bucket}/ckpt/after", {"datasetRef": "stories"}, steps=6), namespace
    )
    driver.add("trainingruns", "after", reconcile_trainingrun.reconcile)
    driver.run_until(
        "TrainingRun after to wait", lambda: driver.phase("trainingruns", "after") == "Waiting", 20
    )
    waiting = driver.condition("trainingruns", "after", "Waiting")
    assert waiting["status"] == "True" and "Dataset stories (not found)" in waiting["message"]

    operator_cluster.apply(dataset_yaml("stories", source, f"{s3_bucket}/out/stories"), namespace)
    driver.targets.insert(0, ("datasets", "stories", reconcile_dataset.reconcile))
    driver.run_to_end("trainingruns", "after", timeout=360)
    st = status(driver, "after")
    assert st["phase"] == "Succeeded", st
    assert (st["step"], st["progress"], st["worldSize"]) == (6, "6/6", 1)
    assert st["lastCheckpoint"]["step"] == 6 and st["loss"] > 0
    assert driver.condition("trainingruns", "after", "Waiting")["status"] == "False"
    cm = operator_cluster.get("configmap", "after-train", namespace)
    resolved = yaml.safe_load(cm["data"]["resource.yaml"])["spec"]["datasets"][0]
    assert (
        resolved["uri"] == f"{s3_bucket}/out/stories/revisions/1/manifest.json"
        and resolved["datasetRef"] == ""
    )


def test_two_nodes_survive_a_deleted_pod_without_spending_a_restart(
    operator_cluster, namespace, driver, s3_bucket, data
):
    """A deleted pod's trainer checkpoints on SIGTERM and its launcher exits 4 (stopped), so the
    gang is recreated and resumes without counting a restart."""
    operator_cluster.apply(
        run_yaml("pair", f"{s3_bucket}/ckpt/pair", {"uri": data}, nodes=2, steps=60, every=5), namespace
    )
    driver.add("trainingruns", "pair", reconcile_trainingrun.reconcile)
    driver.run_until(
        "a committed checkpoint of TrainingRun pair",
        lambda: (status(driver, "pair").get("lastCheckpoint") or {}).get("step", 0) >= 5,
        timeout=240,
    )
    st = status(driver, "pair")
    assert st["phase"] == "Running" and st["nodes"] == 2 and st["worldSize"] == 2, st
    gang = driver.condition("trainingruns", "pair", "GangScheduled")
    assert (gang["status"], gang["reason"]) == ("True", "AllPodsRunning")
    pods = operator_cluster.list("pods", namespace, "batch.kubernetes.io/job-completion-index=1")
    operator_cluster.kubectl("delete", "pod", pods[0]["metadata"]["name"], "-n", namespace, "--wait=false")
    driver.run_to_end("trainingruns", "pair", timeout=360)
    st = status(driver, "pair")
    assert st["phase"] == "Succeeded", st
    assert not [e for e in driver.events if e[2] == "GangRestart"], driver.events
    assert st.get("restarts", 0) == 0 and st["step"] == 60, st
    recreated = [e for e in driver.events if e[2] == "GangRecreated"]
    # Seen on the pod ("exited with code 4") or, when the Job removed it first, in the Job's
    # pod failure policy condition ("failed with exit code 4").
    assert len(recreated) == 1 and re.search(r"\bexit(ed with)? code 4\b", recreated[0][3]), recreated


def test_an_evicted_pod_does_not_use_up_a_restart(operator_cluster, namespace, driver, s3_bucket, data):
    """A spot reclaim or a drain evicts a trainer through the Eviction API: the API server marks
    the pod DisruptionTarget and deletes it. With grace period 0 the node agent kills it at once
    (no checkpoint on SIGTERM, no exit 4), so only the DisruptionTarget condition keeps the restart
    free; maxRestarts 0 makes a counted restart fail the run."""
    operator_cluster.apply(
        run_yaml(
            "spot",
            f"{s3_bucket}/ckpt/spot",
            {"uri": data},
            # Long enough that the evicted pod's process is gone before it could finish the run
            # (its kill lands seconds after the pod object goes; 40 tiny steps took less).
            steps=300,
            every=5,
            failurePolicy={"maxRestarts": 0},
        ),
        namespace,
    )
    driver.add("trainingruns", "spot", reconcile_trainingrun.reconcile)
    driver.run_until(
        "a committed checkpoint of TrainingRun spot",
        lambda: (status(driver, "spot").get("lastCheckpoint") or {}).get("step", 0) >= 5,
        timeout=240,
    )
    [pod] = operator_cluster.list("pods", namespace, "capstan.dev/owner=spot")
    name = pod["metadata"]["name"]
    eviction = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        delete_options=client.V1DeleteOptions(grace_period_seconds=0),
    )
    client.CoreV1Api(kube.api_client()).create_namespaced_pod_eviction(name, namespace, eviction)
    evicted = operator_cluster.wait_for(
        f"pod {name} to be marked DisruptionTarget and deleted",
        lambda: (
            (p := operator_cluster.get("pod", name, namespace)) is None
            or (p["metadata"].get("deletionTimestamp") and p)
        ),
        timeout=30,
    )
    if evicted is not True:  # still there (the Job's finalizer): the API server's condition
        conds = {c["type"]: c for c in evicted["status"]["conditions"]}
        assert conds["DisruptionTarget"]["reason"] == "EvictionByEvictionAPI", conds
    driver.run_to_end("trainingruns", "spot", timeout=360)
    st = status(driver, "spot")
    conds = [c.get("message") for c in st.get("conditions") or []]
    why = f"{st.get('phase')} at step {st.get('step')}: {st.get('message')}; conditions {conds}; events {driver.events[-6:]}"
    assert st["phase"] == "Succeeded" and st["step"] == 300, why
    assert st.get("restarts", 0) == 0, st
    assert not [e for e in driver.events if e[2] == "GangRestart"], driver.events
    [recreated] = [e for e in driver.events if e[2] == "GangRecreated"]
    # Seen on the killed pod (137) or in the Job's pod failure policy condition.
    assert "code 137" in recreated[3] or "DisruptionTarget" in recreated[3], recreated
    start = trainer_start_record(operator_cluster, namespace, "spot")
    assert start["step"] >= 5 and start["resumedFrom"], start  # the new gang resumed


def test_gang_that_cannot_be_placed_times_out(operator_cluster, namespace, driver, s3_bucket, data):
    operator_cluster.apply(
        run_yaml(
            "greedy",
            f"{s3_bucket}/ckpt/greedy",
            {"uri": data},
            nodes=2,
            resources={"minNodes": 2, "maxNodes": 2, "gpusPerNode": 8},
            scheduling={"gangTimeoutSeconds": 3},
        ),
        namespace,
    )
    driver.add("trainingruns", "greedy", reconcile_trainingrun.reconcile)
    cond = driver.run_until(
        "the gang timeout",
        lambda: (
            (c := driver.condition("trainingruns", "greedy", "GangScheduled"))
            and c["reason"] == "GangTimeout"
            and c
        ),
        timeout=60,
    )
    assert cond["status"] == "False"
    assert "not all pods running within 3 s (0 of 2 pods running" in cond["message"]
    assert "nvidia.com/gpu" in cond["message"]  # the scheduler's reason, as the user needs it
    assert driver.phase("trainingruns", "greedy") == "Scheduling"
    # The gang is torn down, then retried after the backoff.
    driver.run_until(
        "the gang to be recreated after the backoff",
        lambda: sum(e[2] == "Created" for e in driver.events) >= 2,
        timeout=60,
    )


def test_suspend_and_resume(operator_cluster, namespace, driver, s3_bucket, data):
    operator_cluster.apply(
        run_yaml("pause", f"{s3_bucket}/ckpt/pause", {"uri": data}, steps=5000, every=5), namespace
    )
    driver.add("trainingruns", "pause", reconcile_trainingrun.reconcile)
    driver.run_until(
        "a checkpoint of TrainingRun pause",
        lambda: (status(driver, "pause").get("lastCheckpoint") or {}).get("step", 0) >= 5,
        timeout=240,
    )
    operator_cluster.kubectl(
        "patch", "trainingrun", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )
    driver.run_until(
        "TrainingRun pause to be Suspended with no pods",
        lambda: (
            driver.phase("trainingruns", "pause") == "Suspended"
            and not operator_cluster.list("pods", namespace, "capstan.dev/owner=pause")
        ),
        timeout=90,
    )
    assert operator_cluster.get("job", "pause-train", namespace) is None
    # The trainers got SIGTERM and checkpointed the step they had reached (not only every 5th).
    stopped = json.loads(storage.read_bytes(f"{s3_bucket}/ckpt/pause/progress.json"))
    assert stopped["phase"] == "Stopped" and stopped["lastCheckpoint"]["step"] == stopped["step"], stopped
    at_suspend = stopped["step"]
    operator_cluster.kubectl(
        "patch", "trainingrun", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    # progress.json still holds the suspended gang's last step: a new checkpoint proves training.
    driver.run_until(
        "TrainingRun pause to run again and write a new checkpoint",
        lambda: (
            driver.phase("trainingruns", "pause") == "Running"
            and status(driver, "pause")["lastCheckpoint"]["step"] > at_suspend
        ),
        timeout=240,
    )
    assert driver.condition("trainingruns", "pause", "Suspended")["status"] == "False"
    assert status(driver, "pause")["restarts"] == 0
    # The resumed trainer loaded the checkpoint it was suspended at (not a fresh start).
    start = trainer_start_record(operator_cluster, namespace, "pause")
    assert start["step"] == at_suspend and start["resumedFrom"], start
    operator_cluster.kubectl("delete", "trainingrun", "pause", "-n", namespace, "--wait=false")


def test_an_elastic_gang_shrinks_and_grows_back_without_a_gang_restart(
    operator_cluster, namespace, driver, s3_bucket, data, tmp_path
):
    """minNodes 2, maxNodes 3: pod 2, deleted mid-run, checkpoints on SIGTERM; pods 0 and 1
    re-rendezvous at world size 2 and train on while the replacement cannot be placed (the nodes
    are tainted); once it can, it joins and the world grows back to 3. No gang restart, and the
    loss is an uninterrupted run's."""
    steps, ckpt = 800, f"{s3_bucket}/ckpt/elastic"
    elastic = {"minNodes": 2, "maxNodes": 3, "nprocPerNode": 1}
    operator_cluster.apply(
        run_yaml("elastic", ckpt, {"uri": data}, nodes=3, steps=steps, every=10, resources=elastic), namespace
    )
    driver.add("trainingruns", "elastic", reconcile_trainingrun.reconcile)
    seen: list[int] = []

    def world() -> int | None:
        ws = status(driver, "elastic").get("worldSize")
        if ws and (not seen or seen[-1] != ws):
            seen.append(ws)
        return ws

    driver.run_until(
        "a committed checkpoint of TrainingRun elastic at world size 3",
        lambda: world() == 3 and (status(driver, "elastic").get("lastCheckpoint") or {}).get("step", 0) >= 10,
        timeout=300,
    )
    job_uid = operator_cluster.get("job", "elastic-train", namespace)["metadata"]["uid"]
    [pod2] = operator_cluster.list(
        "pods", namespace, "capstan.dev/owner=elastic,batch.kubernetes.io/job-completion-index=2"
    )
    # The node is lost for a while: its replacement cannot be placed until the taint goes.
    operator_cluster.kubectl("taint", "nodes", "--all", "capstan.dev/hold=1:NoSchedule")
    try:
        operator_cluster.kubectl("delete", "pod", pod2["metadata"]["name"], "-n", namespace, "--wait=false")
        driver.run_until("world size 2 once pod 2 left", lambda: world() == 2, timeout=240)
    finally:
        operator_cluster.kubectl("taint", "nodes", "--all", "capstan.dev/hold-")
    shrunk = driver.condition("trainingruns", "elastic", "GangScheduled")
    assert driver.phase("trainingruns", "elastic") == "Running", status(driver, "elastic")
    driver.run_until("world size 3 again with the replacement pod", lambda: world() == 3, timeout=300)
    driver.run_to_end("trainingruns", "elastic", timeout=600)
    st = status(driver, "elastic")
    assert st["phase"] == "Succeeded" and st["step"] == steps, st
    assert seen == [3, 2, 3], seen
    assert st.get("restarts", 0) == 0 and not [
        e for e in driver.events if e[2] in ("GangRestart", "GangRecreated")
    ]
    assert (
        operator_cluster.get("job", "elastic-train", namespace)["metadata"]["uid"] == job_uid
    )  # the same gang
    changes = [e[3] for e in driver.events if e[2] == "WorldSizeChanged"]
    assert [c.split(" at ")[0] for c in changes] == ["world size 3 -> 2", "world size 2 -> 3"], changes
    assert shrunk["reason"] in ("ElasticShrunk", "AllPodsRunning"), shrunk  # the replacement may already run
    # The reference: the same run uninterrupted at world size 3 (torchrun on this machine); the
    # loader's order and the global batch do not depend on the world size.
    ref = tmp_path / "ref.yaml"
    body = yaml.safe_load(
        run_yaml("ref", f"{s3_bucket}/ckpt/elastic-ref", {"uri": data}, nodes=3, steps=steps, every=400)
    )
    body["spec"]["resources"] = {"minNodes": 1, "maxNodes": 1, "nprocPerNode": 3}
    ref.write_text(yaml.safe_dump(body))
    result = torchrun(ref, nproc=3, timeout_s=600)
    assert result.returncode == 0, result.stderr[-3000:]
    want = result.losses()[steps]
    got = json.loads(storage.read_bytes(f"{ckpt}/progress.json"))["loss"]
    assert abs(got - want) / abs(want) < 1e-5, f"final loss {got} vs uninterrupted {want}"


def test_a_finished_run_given_more_steps_continues_from_its_checkpoint(
    operator_cluster, namespace, driver, s3_bucket, data
):
    operator_cluster.apply(
        run_yaml("more", f"{s3_bucket}/ckpt/more", {"uri": data}, steps=6, every=3), namespace
    )
    driver.add("trainingruns", "more", reconcile_trainingrun.reconcile)
    driver.run_to_end("trainingruns", "more", timeout=300)
    assert (status(driver, "more")["phase"], status(driver, "more")["step"]) == ("Succeeded", 6)
    first_job = operator_cluster.get("job", "more-train", namespace)["metadata"]["uid"]
    patch = '{"spec": {"optimizer": {"totalSteps": 10}}}'
    operator_cluster.kubectl("patch", "trainingrun", "more", "-n", namespace, "--type=merge", "-p", patch)

    def second_done():
        s = status(driver, "more")
        return s.get("observedGeneration") == 2 and s.get("phase") in ("Succeeded", "Failed") and s

    final = driver.run_until("TrainingRun more to finish 10 steps (generation 2)", second_done, timeout=300)
    assert (final["phase"], final["step"], final["totalSteps"]) == ("Succeeded", 10, 10), final
    events = [e[1:] for e in driver.events if e[0] == "more"]
    print("events of TrainingRun more:", *events, sep="\n")  # shown with a failure: why a restart was spent
    assert final["lastCheckpoint"]["step"] == 10 and final.get("restarts", 0) == 0, (final, events)
    # The work was redone by a new gang that resumed at step 6, not from scratch.
    assert operator_cluster.get("job", "more-train", namespace)["metadata"]["uid"] != first_job
    start = trainer_start_record(operator_cluster, namespace, "more")
    assert start["step"] == 6 and start["resumedFrom"], start
    assert "SpecChanged" in [e[2] for e in driver.events if e[0] == "more"]
