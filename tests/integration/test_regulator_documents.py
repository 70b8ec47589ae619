"""Issue 16, item 5, through the operator: an Evaluation's Job writes the training-data summary
(EU AI Act template) beside the model card, and the card's training procedure, filled from the
checkpoint's capstan.json and the dataset's manifest.

Needs images built from this change (the evaluate workload writes the summary)."""

from __future__ import annotations

import json

import pytest

from capstan_operator.evaluation import reconcile as reconcile_evaluation
from capstan_trainer import storage
from tests.integration.test_reconcile_evaluation import evaluation_yaml, status
from tests.support.operator_env import driver, op_cfg, operator_cluster

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures


def test_an_evaluation_writes_the_training_summary_beside_the_card(
    operator_cluster, namespace, driver, tiny, s3_bucket
):
    out = f"{s3_bucket}/docs"
    spec = {"model": {"uri": tiny.checkpoint_uri}, "validationUri": f"{tiny.dataset_uri}/manifest.json"}
    operator_cluster.apply(evaluation_yaml("docs", out, [], **spec), namespace)
    driver.add("evaluations", "docs", reconcile_evaluation.reconcile)
    driver.run_until(
        "Evaluation docs to finish",
        lambda: status(driver, "evaluations", "docs").get("phase") in ("Succeeded", "Failed"),
        300,
    )
    st = status(driver, "evaluations", "docs")
    assert st["phase"] == "Succeeded", st
    assert st["trainingSummaryUri"] == f"{out}/training-summary.md"
    summary = json.loads(storage.read_bytes(f"{out}/training-summary.json"))
    size = summary["generalInformation"]["trainingDataSize"]["text"]
    assert size["tokens"] > 0 and size["range"] == "Less than 1 billion tokens"
    assert summary["dataProcessing"]["licences"]["documentsKept"] == {"CC0-1.0": 624}
    card = storage.read_bytes(f"{out}/README.md").decode()
    assert "## Training procedure" in card and "process-hours on cpu" in card
