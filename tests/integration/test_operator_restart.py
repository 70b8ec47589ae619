"""The real operator process killed (SIGKILL) in the middle of a TrainingRun and started again:
it adopts what exists instead of recreating it (one Job, one Service, one ConfigMap, the same
pod, the trainer never restarted), keeps the status (restarts stays 0) and follows the run to
Succeeded."""

from __future__ import annotations

import pytest

from tests.support.operator_env import S3_SECRET, op_cfg, operator_cluster
from tests.support.operator_proc import OperatorProcess
from tests.support.trainingruns import data, run_yaml, trainer_start_record

pytestmark = pytest.mark.cluster
__all__ = ["data", "op_cfg", "operator_cluster"]  # fixtures

# Long enough that the operator is killed mid-run: 40 steps were over before the first status
# with a checkpoint on a quiet machine.
STEPS, EVERY = 200, 10


def run_status(cluster, namespace: str, name: str) -> dict:
    return (cluster.get("trainingrun", name, namespace) or {}).get("status") or {}


def uids(cluster, namespace: str, kind: str) -> list[str]:
    return [o["metadata"]["uid"] for o in cluster.list(kind, namespace, "capstan.dev/owner=steady")]


def test_operator_killed_mid_run_picks_up_where_it_was(
    operator_cluster, namespace, op_cfg, s3_bucket, data, tmp_path
):
    cluster = operator_cluster
    op = OperatorProcess(
        cluster,
        namespace,
        tmp_path / "operator.log",
        env={
            "CAPSTAN_S3_ENDPOINT": op_cfg.s3_endpoint,
            "CAPSTAN_S3_SECRET": S3_SECRET,
            "CAPSTAN_PROGRESS_INTERVAL_SECONDS": "2",
        },
    )
    op.start()
    try:
        cluster.apply(
            run_yaml("steady", f"{s3_bucket}/ckpt/steady", {"uri": data}, steps=STEPS, every=EVERY), namespace
        )
        before = cluster.wait_for(
            "TrainingRun steady to report a committed checkpoint",
            lambda: (st := run_status(cluster, namespace, "steady")).get("lastCheckpoint") and st,
            timeout=240,
        )
        assert before["phase"] == "Running" and before["restarts"] == 0, before
        assert before["step"] < STEPS, f"the run was over before the operator was killed: {before}"
        children = {k: uids(cluster, namespace, k) for k in ("jobs", "services", "configmaps", "pods")}
        assert all(len(v) == 1 for v in children.values()), children

        op.kill()
        op.start()
        cluster.wait_for("the restarted operator's liveness endpoint", op.live, timeout=60)
        cluster.wait_for(
            f"TrainingRun steady to report progress past step {before['step']} after the restart",
            lambda: run_status(cluster, namespace, "steady").get("step", 0) > before["step"],
            timeout=120,
        )
        done = cluster.wait_for(
            "TrainingRun steady to finish",
            lambda: (
                (st := run_status(cluster, namespace, "steady")).get("phase") in ("Succeeded", "Failed")
                and st
            ),
            timeout=300,
        )
    finally:
        op.kill()
    assert done["phase"] == "Succeeded", f"{done}\noperator log:\n{op.tail()}"
    assert (done["step"], done["restarts"], done["startTime"]) == (STEPS, 0, before["startTime"])
    after = {k: uids(cluster, namespace, k) for k in ("jobs", "services", "configmaps", "pods")}
    assert after == children, "children were recreated after the operator restart"
    start = trainer_start_record(cluster, namespace, "steady")
    assert start["resumedFrom"] is None, start  # the trainer ran once, from scratch to the end
    reasons = [
        e["reason"] for e in cluster.list("events", namespace) if e["involvedObject"]["name"] == "steady"
    ]
    assert reasons.count("Created") == 1 and "GangRestart" not in reasons, reasons
