"""Continuous delivery on the local control plane: a real TrainingRun (trainer pods) whose
checkpoints are evaluated by step (`model.step`), and a Deployment with followPassingEvaluations
that serves the first passing checkpoint, then rolls a later, better one out as a canary and
promotes it. Every reconciler is the real one; the pods are the real workloads."""

from __future__ import annotations

import pytest

from capstan_operator.deployment import reconcile as reconcile_deployment
from capstan_operator.evaluation import reconcile as reconcile_evaluation
from capstan_operator.trainingrun import reconcile as reconcile_trainingrun
from tests.integration.test_reconcile_deployment import deployment_yaml, send_traffic, serve_driver
from tests.integration.test_reconcile_evaluation import evaluation_yaml, status
from tests.support.operator_env import driver, op_cfg, operator_cluster
from tests.support.trainingruns import run_yaml

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster", "serve_driver"]  # fixtures

STEPS, EARLY = 10, 2
PPL = "perplexity.token_perplexity"


def test_a_better_evaluation_of_a_later_step_rolls_out_as_a_canary(
    operator_cluster, namespace, serve_driver, tiny, s3_bucket
):
    cluster, driver = operator_cluster, serve_driver
    root = f"{s3_bucket}/ckpt/run"
    early_uri, final_uri = f"{root}/step-{EARLY:08d}", f"{root}/step-{STEPS:08d}"
    # keepLast above the checkpoint count: the early step must outlive the run.
    checkpoint = {"uri": root, "intervalSteps": EARLY, "keepLast": STEPS}
    cluster.apply(
        run_yaml("run", root, {"uri": tiny.dataset_uri}, steps=STEPS, checkpoint=checkpoint), namespace
    )

    def evaluation(name: str, step: int, gate_max: float) -> str:
        gates = [{"metric": PPL, "max": gate_max}]
        model = {"trainingRunRef": {"name": "run"}, "step": step}
        return evaluation_yaml(
            name, f"{s3_bucket}/{name}", gates, model=model, validationUri=tiny.dataset_uri
        )

    follow = {"trainingRunRef": {"name": "run"}, "followPassingEvaluations": True, "name": "tiny"}
    cluster.apply(evaluation("early", EARLY, 1000), namespace)
    cluster.apply(deployment_yaml("chat", "", model=follow), namespace)
    driver.add("trainingruns", "run", reconcile_trainingrun.reconcile)
    driver.add("evaluations", "early", reconcile_evaluation.reconcile)
    driver.add("deployments", "chat", reconcile_deployment.reconcile)

    # The Evaluation waits for its step's checkpoint, not for the run to end; the Deployment for it.
    driver.step()
    early = status(driver, "evaluations", "early")
    assert early["phase"] == "Waiting", early
    assert early["message"].startswith("waiting for TrainingRun run to commit its checkpoint of step 2 (now ")
    assert status(driver, "deployments", "chat")["message"] == (
        "waiting for a passing Evaluation of TrainingRun run"
    )

    driver.run_until(
        "Deployment chat to serve Evaluation early's checkpoint",
        lambda: status(driver, "deployments", "chat").get("phase") == "Available",
        420,
    )
    early = status(driver, "evaluations", "early")
    assert (early["phase"], early["passed"], early["modelUri"]) == ("Succeeded", True, early_uri), early
    dep = status(driver, "deployments", "chat")
    assert (dep["revision"], dep["modelUri"]) == (1, early_uri), dep

    # A second Evaluation, of the final step, gated on beating the first: it passes and rolls out.
    cluster.apply(evaluation("final", STEPS, early["metrics"][PPL]), namespace)
    driver.add("evaluations", "final", reconcile_evaluation.reconcile)
    driver.run_until(
        "a canary of Evaluation final's checkpoint",
        lambda: status(driver, "deployments", "chat").get("canaryRevision") == 2,
        300,
    )
    final = status(driver, "evaluations", "final")
    assert (final["passed"], final["modelUri"]) == (True, final_uri), final
    assert final["metrics"][PPL] < early["metrics"][PPL]
    assert status(driver, "trainingruns", "run")["phase"] == "Succeeded"

    def promoted():
        send_traffic(cluster, namespace, "chat")  # the canary's analysis needs requests
        return status(driver, "deployments", "chat").get("revision") == 2

    driver.run_until("revision 2 (Evaluation final's checkpoint) to be promoted", promoted, 300)
    dep = status(driver, "deployments", "chat")
    assert (dep["revision"], dep["previousRevision"], dep["modelUri"]) == (2, 1, final_uri), dep
    assert [(h["revision"], h["modelUri"], h["outcome"]) for h in dep["history"]] == [
        (1, early_uri, "Promoted"),
        (2, final_uri, "Promoted"),
    ]
    started = [e[3] for e in driver.events if e[:3] == ("chat", "Normal", "CanaryStarted")]
    assert started == [f"canary revision 2 ({final_uri}) starting at 50%"]
