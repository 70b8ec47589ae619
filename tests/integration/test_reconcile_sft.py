"""Chat data and SFT through the operator: the bundled demo conversations prepared as a chat
Dataset (loss mask on the assistant turns), then a TrainingRun with objective sft on it whose
status carries the loss-token count. Needs trainer images built with the chat/sft code."""

from __future__ import annotations

import pytest

from capstan_operator.dataset import reconcile as reconcile_dataset
from capstan_operator.trainingrun import reconcile as reconcile_trainingrun
from capstan_trainer import shards
from tests.support.operator_env import (
    chat_dataset_yaml,
    driver,
    op_cfg,
    operator_cluster,
    upload_conversations,
)
from tests.support.trainingruns import run_yaml, status

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures


@pytest.mark.timeout(900)
def test_chat_dataset_then_sft_run(operator_cluster, namespace, driver, s3_bucket):
    source = upload_conversations(s3_bucket)
    out = f"{s3_bucket}/out/chat"
    operator_cluster.apply(chat_dataset_yaml("chat", source, out), namespace)
    operator_cluster.apply(
        run_yaml("sft", f"{s3_bucket}/ckpt/sft", {"datasetRef": "chat"}, steps=4, every=2, objective="sft"),
        namespace,
    )
    driver.add("datasets", "chat", reconcile_dataset.reconcile)
    driver.add("trainingruns", "sft", reconcile_trainingrun.reconcile)
    driver.run_until(
        "TrainingRun sft to finish",
        lambda: (
            driver.phase("trainingruns", "sft") in ("Succeeded", "Failed")
            or driver.phase("datasets", "chat") == "Failed"
        ),
        timeout=600,
    )
    ds = driver.get("datasets", "chat")["status"]
    assert ds["phase"] == "Ready", ds
    manifest = shards.read_manifest(ds["manifestUri"])
    assert manifest.loss_mask == "assistant"
    assert 0 < manifest.splits["train"].loss_tokens < manifest.splits["train"].tokens
    st = status(driver, "sft")
    assert st["phase"] == "Succeeded", st
    assert st["step"] == 4 and 0 < st["lossTokens"] < 128  # some of the step's 128 targets
