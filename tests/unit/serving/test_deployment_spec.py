"""Deployment spec: defaults and the cross-field rules (the pydantic twins of the CRD's CEL)."""

from __future__ import annotations

from capstan_api.common import parse_spec
from capstan_api.deployment import DeploymentSpec
from tests.unit.spec_helpers import rejected, resource, undocumented_fields

KIND = "Deployment"


def _spec(**extra) -> dict:
    return {"model": {"uri": "s3://b/export"}, **extra}


def test_minimal_spec_gets_documented_defaults():
    wire = parse_spec(DeploymentSpec, resource(KIND, _spec()), KIND).to_wire()
    assert wire["runtime"] == "builtin" and wire["replicas"] == 1
    assert wire["server"] == {
        "maxBatchSize": 16,
        "maxQueue": 64,
        "maxModelLen": 0,
        "maxPromptsPerRequest": 16,
        "requestTimeoutSeconds": 600,
    }
    assert [s["weight"] for s in wire["rollout"]["steps"]] == [10, 50, 100]
    assert wire["autoscaling"]["enabled"] is False


def test_every_field_description_starts_with_its_wire_name():
    assert undocumented_fields(DeploymentSpec) == []


def test_model_needs_exactly_one_source():
    msg = "exactly one of evaluationRef, trainingRunRef or uri"
    assert msg in rejected(DeploymentSpec, KIND, {"model": {}})
    two = {"model": {"uri": "s3://models/u", "evaluationRef": {"name": "ev"}}}
    assert msg in rejected(DeploymentSpec, KIND, two)
    follow = {"model": {"evaluationRef": {"name": "ev"}, "followPassingEvaluations": True}}
    assert "followPassingEvaluations needs trainingRunRef" in rejected(DeploymentSpec, KIND, follow)
    ok = {"model": {"trainingRunRef": {"name": "run"}, "followPassingEvaluations": True}}
    assert parse_spec(DeploymentSpec, resource(KIND, ok), KIND).model.follow_passing_evaluations


def test_autoscaling_bounds_ordered():
    bad = _spec(autoscaling={"enabled": True, "minReplicas": 5, "maxReplicas": 2})
    assert "minReplicas must not exceed maxReplicas (5 > 2)" in rejected(DeploymentSpec, KIND, bad)


def test_rollout_weights_increase_to_100():
    def steps(*w):
        return _spec(rollout={"steps": [{"weight": x} for x in w]})

    assert "strictly increasing" in rejected(DeploymentSpec, KIND, steps(10, 10, 100))
    assert "strictly increasing" in rejected(DeploymentSpec, KIND, steps(50, 20, 100))
    assert "last rollout step must have weight 100" in rejected(DeploymentSpec, KIND, steps(10, 50))
    assert "spec.rollout.steps[0].weight" in rejected(DeploymentSpec, KIND, steps(0, 100))
    spec = parse_spec(DeploymentSpec, resource(KIND, steps(100)), KIND)
    assert spec.rollout.steps[0].pause_seconds == 60


def test_vllm_needs_a_gpu():
    assert "runtime vllm needs resources.gpus >= 1" in rejected(DeploymentSpec, KIND, _spec(runtime="vllm"))
    ok = _spec(runtime="vllm", resources={"gpus": 1})
    assert parse_spec(DeploymentSpec, resource(KIND, ok), KIND).runtime == "vllm"


def test_negative_queue_is_rejected_naming_the_field():
    assert "spec.server.maxQueue" in rejected(DeploymentSpec, KIND, _spec(server={"maxQueue": -1}))
