"""Evaluation spec: defaults and the cross-field rules (the pydantic twins of the CRD's CEL)."""

from __future__ import annotations

from capstan_api.common import parse_spec
from capstan_api.evaluation import EvaluationSpec
from tests.unit.spec_helpers import rejected, resource, undocumented_fields

KIND = "Evaluation"


def test_minimal_spec_gets_documented_defaults():
    spec = parse_spec(EvaluationSpec, resource(KIND, {"model": {"uri": "s3://b/ckpt"}}), KIND)
    wire = spec.to_wire()
    assert wire["batchSize"] == 16 and wire["device"] == "auto" and wire["contextLength"] == 0
    assert wire["biasProbes"] == {"builtin": True, "uri": ""}
    assert wire["resources"]["cpu"] == "1" and wire["resources"]["gpus"] == 0
    assert "datasetRef" not in wire and "trainingRunRef" not in wire["model"]


def test_every_field_description_starts_with_its_wire_name():
    assert undocumented_fields(EvaluationSpec) == []


def test_model_needs_exactly_one_source():
    both = {"model": {"uri": "s3://b/c", "trainingRunRef": {"name": "run"}}}
    assert "exactly one of trainingRunRef, deploymentRef or uri" in rejected(EvaluationSpec, KIND, both)
    assert "exactly one of trainingRunRef, deploymentRef or uri" in rejected(
        EvaluationSpec, KIND, {"model": {}}
    )
    spec = parse_spec(EvaluationSpec, resource(KIND, {"model": {"trainingRunRef": {"name": "run"}}}), KIND)
    assert spec.model.training_run_ref.name == "run"


def test_perplexity_source_is_one_or_none():
    spec = {"model": {"uri": "s3://models/u"}, "datasetRef": {"name": "d"}, "validationUri": "s3://v"}
    assert "at most one of datasetRef or validationUri" in rejected(EvaluationSpec, KIND, spec)


def test_gate_needs_a_bound_and_ordered_bounds():
    no_bound = {"model": {"uri": "s3://models/u"}, "gates": [{"metric": "perplexity.token_perplexity"}]}
    msg = rejected(EvaluationSpec, KIND, no_bound)
    assert "spec.gates[0]" in msg and "a gate needs min, max or both" in msg
    crossed = {"model": {"uri": "s3://models/u"}, "gates": [{"metric": "m", "min": 2, "max": 1}]}
    assert "gate min must not exceed max" in rejected(EvaluationSpec, KIND, crossed)


def test_tasks_are_typed_and_uniquely_named():
    task = {"name": "arith", "type": "exactMatch", "uri": "file:///t.jsonl"}
    dup = {"model": {"uri": "s3://models/u"}, "tasks": [task, task]}
    assert "task names must be unique (repeated: arith)" in rejected(EvaluationSpec, KIND, dup)
    bad_type = {"model": {"uri": "s3://models/u"}, "tasks": [{**task, "type": "freeform"}]}
    assert "spec.tasks[0].type" in rejected(EvaluationSpec, KIND, bad_type)


def test_unknown_field_is_named():
    msg = rejected(EvaluationSpec, KIND, {"model": {"uri": "s3://models/u"}, "batchsize": 4})
    assert "spec.batchsize: unknown field" in msg


def test_step_names_a_checkpoint_of_a_run_or_under_a_root():
    spec = parse_spec(EvaluationSpec, resource(KIND, {"model": {"uri": "s3://b/ckpt/", "step": 40}}), KIND)
    assert spec.model.checkpoint_uri() == "s3://b/ckpt/step-00000040"
    plain = parse_spec(EvaluationSpec, resource(KIND, {"model": {"uri": "s3://b/ckpt"}}), KIND)
    assert plain.model.checkpoint_uri() == "s3://b/ckpt" and "step" not in plain.to_wire()["model"]
    folder = {"model": {"uri": "s3://b/ckpt/step-00000040", "step": 40}}
    assert "step needs uri to be a checkpoint root, not a step folder" in rejected(
        EvaluationSpec, KIND, folder
    )
    zero = {"model": {"trainingRunRef": {"name": "run"}, "step": 0}}
    assert "spec.model.step" in rejected(EvaluationSpec, KIND, zero)
