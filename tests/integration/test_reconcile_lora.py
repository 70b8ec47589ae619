"""LoRA through the operator: a base pretrained on the bundled demo conversations, then an sft
TrainingRun with spec.lora that starts from it (init.fromTrainingRun). The trainer reports fewer
trainable than total parameters, its checkpoint records the adapters and keeps the base weights
unchanged, and the checkpoint loads merged (what an Evaluation or Deployment of it reads).
Needs trainer and operator images built with the LoRA code."""

from __future__ import annotations

import pytest
import torch

from capstan_operator.dataset import reconcile as reconcile_dataset
from capstan_operator.trainingrun import reconcile as reconcile_trainingrun
from capstan_trainer import checkpoint, lora
from tests.support.operator_env import (
    chat_dataset_yaml,
    driver,
    op_cfg,
    operator_cluster,
    upload_conversations,
)
from tests.support.trainingruns import run_yaml, status, trainer_start_record

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures


@pytest.mark.timeout(900)
def test_lora_sft_run_from_a_base_run(operator_cluster, namespace, driver, s3_bucket):
    source = upload_conversations(s3_bucket)
    operator_cluster.apply(chat_dataset_yaml("chat", source, f"{s3_bucket}/out/chat"), namespace)
    chat = {"datasetRef": "chat"}
    operator_cluster.apply(run_yaml("base", f"{s3_bucket}/ckpt/base", chat, steps=4, every=4), namespace)
    lora_spec = {"rank": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj", "down_proj"]}
    tuned = run_yaml(
        "tuned",
        f"{s3_bucket}/ckpt/tuned",
        chat,
        steps=4,
        every=2,
        objective="sft",
        init={"fromTrainingRun": "base"},
        lora=lora_spec,
    )
    operator_cluster.apply(tuned, namespace)
    driver.add("datasets", "chat", reconcile_dataset.reconcile)
    for run in ("base", "tuned"):
        driver.add("trainingruns", run, reconcile_trainingrun.reconcile)
    driver.run_until(
        "TrainingRun tuned to finish",
        lambda: (
            any(driver.phase("trainingruns", r) in ("Succeeded", "Failed") for r in ("tuned",))
            or driver.phase("trainingruns", "base") == "Failed"
            or driver.phase("datasets", "chat") == "Failed"
        ),
        timeout=720,
    )
    st = status(driver, "tuned")
    # With trainer images older than spec.lora, the trainer refuses it: "spec.lora: unknown field".
    why = [c.get("message") for c in st.get("conditions", []) + status(driver, "base").get("conditions", [])]
    assert st["phase"] == "Succeeded", why
    start = trainer_start_record(operator_cluster, namespace, "tuned")
    assert 0 < start["trainableParams"] < start["totalParams"] / 4, start

    folder = checkpoint.resolve(f"{s3_bucket}/ckpt/tuned").uri
    assert checkpoint.read_meta(folder)["lora"]["rank"] == 4
    saved, base = _saved_state(folder), _saved_state(checkpoint.resolve(f"{s3_bucket}/ckpt/base").uri)
    assert {k for k in saved if lora.is_adapter(k)} == set(saved) - set(base) != set()
    assert all(torch.equal(saved[k], v) for k, v in base.items()), "the frozen base changed"
    merged, _ = checkpoint.load_model(folder)
    assert not any(isinstance(m, lora.LoRALinear) for m in merged.modules())


def _saved_state(folder: str) -> dict[str, torch.Tensor]:
    """A step folder's model tensors as saved (adapters unmerged)."""
    return checkpoint.saved_model(folder).state_dict()
