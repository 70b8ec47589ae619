"""init.huggingFace in the operator: the model's config.json is read before any pod; an
unsupported one fails the run naming the field, a supported one sizes the capacity plan."""

from __future__ import annotations

import pytest

from capstan_api.trainingrun import TrainingRunSpec
from capstan_operator import objectstore
from capstan_operator.config import OperatorConfig
from capstan_operator.trainingrun import hfinit
from capstan_operator.trainingrun.reconcile import reconcile
from tests.unit.operator.fake_kube import FakeKube, fake_kube
from tests.unit.operator.resources import trainingrun

__all__ = ["fake_kube"]  # fixture
CFG = OperatorConfig()
MODEL = "s3://models/llama-3.2-1b"
# Llama 3.2 1B's config.json, as published (the fields the decoder reads).
LLAMA_32_1B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "tie_word_embeddings": True,
    "attention_bias": False,
    "mlp_bias": False,
    "pretraining_tp": 1,
    "eos_token_id": 128001,
}


def hf_run(**model) -> dict:
    body = trainingrun("llm", init={"huggingFace": MODEL})
    body["spec"]["model"] = model
    body["status"] = {}
    return body


@pytest.fixture
def stored(monkeypatch) -> dict:
    """config.json in the fake object store; tests edit it."""
    files = {f"{MODEL}/config.json": dict(LLAMA_32_1B)}
    monkeypatch.setattr(objectstore, "read_json", lambda uri, cfg, field="uri": files.get(uri))
    return files[f"{MODEL}/config.json"]


def test_an_unsupported_config_fails_the_run_naming_the_field_before_any_pod(fake_kube: FakeKube, stored):
    stored["attention_bias"] = True  # Qwen-style biases: the decoder has none
    out = reconcile(hf_run(), CFG)
    assert fake_kube.calls == []
    assert out.status["phase"] == "Failed"
    failed = next(c for c in out.status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "UnsupportedModel"
    assert failed["message"] == (
        f"spec.init.huggingFace: {MODEL}: config.json attention_bias: True is not supported (only False)"
    )


def test_a_supported_config_sizes_the_plan_and_creates_the_gang(fake_kube: FakeKube, stored):
    out = reconcile(hf_run(maxSeqLen=2048), CFG)
    assert ("apply", "Job", "llm-train") in fake_kube.calls
    plan = out.status["plan"]
    # Llama 3.2 1B's published parameter count, from its config.json, not spec.model's preset.
    assert plan["parameters"] == 1_235_814_400 and plan["vocabSize"] == 128256


def test_shape_refusals_name_the_field():
    spec = TrainingRunSpec.model_validate(hf_run()["spec"])
    assert hfinit.shape(spec, None) == (None, f"spec.init.huggingFace: {MODEL} has no config.json")
    other_rope = {**LLAMA_32_1B, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}
    assert "config.json rope_scaling.rope_type: 'yarn' is not supported" in hfinit.shape(spec, other_rope)[1]
    preset = TrainingRunSpec.model_validate(hf_run(preset="1b")["spec"])
    assert hfinit.shape(preset, LLAMA_32_1B)[1].startswith("spec.model.preset: must be left unset")
    shape, problem = hfinit.shape(spec, LLAMA_32_1B)
    assert problem == "" and (shape.n_kv_heads, shape.tie_embeddings, shape.rope_scaling.factor) == (
        8,
        True,
        32.0,
    )
