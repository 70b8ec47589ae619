"""A TrainingRun that starts from a Hugging Face Llama directory in object storage
(spec.init.huggingFace): the operator reads its config.json first, so an unsupported model fails
the run before any pod; a supported one trains from its weights in the trainer image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capstan_operator.trainingrun import reconcile as reconcile_trainingrun
from capstan_trainer import storage, synthetic
from hack import hf_model
from tests.support.operator_env import driver, op_cfg, operator_cluster
from tests.support.trainingruns import run_yaml, status, trainer_start_record

pytestmark = pytest.mark.cluster
__all__ = ["driver", "op_cfg", "operator_cluster"]  # fixtures


def upload_model(tmp_path: Path, bucket: str, **config) -> str:
    """A random GQA / untied / llama3-rope HF Llama in several safetensors shards, under `bucket`."""
    local = hf_model.make(tmp_path / "model", shard_size="20KB", **config)
    uri = f"{bucket}/models/tiny-llama"
    for f in local.iterdir():
        storage.write_bytes(f"{uri}/{f.name}", f.read_bytes())
    return uri


def test_an_unsupported_model_fails_before_any_pod(operator_cluster, namespace, driver, s3_bucket, tmp_path):
    model = upload_model(tmp_path, s3_bucket)
    config = json.loads(storage.read_bytes(f"{model}/config.json"))
    storage.write_bytes(f"{model}/config.json", json.dumps({**config, "mlp_bias": True}).encode())
    operator_cluster.apply(
        run_yaml(
            "biased",
            f"{s3_bucket}/ckpt/biased",
            {"uri": f"{s3_bucket}/data"},
            init={"huggingFace": model},
            model={},
        ),
        namespace,
    )
    driver.add("trainingruns", "biased", reconcile_trainingrun.reconcile)
    driver.run_until(
        "TrainingRun biased to fail", lambda: driver.phase("trainingruns", "biased") == "Failed", 30
    )
    failed = driver.condition("trainingruns", "biased", "Failed")
    assert failed["reason"] == "UnsupportedModel"
    assert (
        failed["message"]
        == f"spec.init.huggingFace: {model}: config.json mlp_bias: True is not supported (only False)"
    )
    assert operator_cluster.list("jobs", namespace) == [] and operator_cluster.list("pods", namespace) == []


def test_a_run_from_an_hf_model_in_s3_trains_and_succeeds(
    operator_cluster, namespace, driver, s3_bucket, tmp_path
):
    """Needs trainer images built with init.huggingFace (capstan/trainer after this change)."""
    model = upload_model(tmp_path, s3_bucket)
    data = f"{s3_bucket}/data/words"
    vocab = hf_model.WORDS + len(hf_model.SPECIALS)
    synthetic.write_dataset(
        data,
        vocab_size=vocab,
        train_tokens=8_000,
        validation_tokens=1_000,
        tokenizer=storage.read_bytes(f"{model}/tokenizer.json"),
        eos_id=hf_model.EOS,
    )
    body = run_yaml(
        "from-hf",
        f"{s3_bucket}/ckpt/from-hf",
        {"uri": data},
        steps=3,
        every=3,
        init={"huggingFace": model},
        model={"maxSeqLen": 64},
    )
    operator_cluster.apply(body, namespace)
    driver.add("trainingruns", "from-hf", reconcile_trainingrun.reconcile)
    driver.run_to_end("trainingruns", "from-hf", timeout=360)
    st = status(driver, "from-hf")
    assert st["phase"] == "Succeeded", st
    assert (st["step"], st["progress"]) == (3, "3/3") and st["lastCheckpoint"]["step"] == 3
    # Planned from the HF config.json (not the default preset): 2 layers of width 64, vocab 107.
    assert st["plan"]["vocabSize"] == vocab and st["plan"]["parameters"] < 100_000
    assert trainer_start_record(operator_cluster, namespace, "from-hf")["init"] == model
    meta = json.loads(storage.read_bytes(f"{st['lastCheckpoint']['uri']}/capstan.json"))
    assert meta["model"]["n_kv_heads"] == 2 and meta["model"]["rope_scaling"]["factor"] == 4.0
