"""resolve(): references become URIs, or the run waits for them, or fails naming the field."""

from __future__ import annotations

from capstan_api.trainingrun import TrainingRunSpec
from capstan_operator.config import OperatorConfig
from capstan_operator.trainingrun.resolve import resolve
from tests.unit.operator.resources import trainingrun

CFG = OperatorConfig()


def spec(**overrides) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate(trainingrun("r", **overrides)["spec"])


def obj(phase: str, **status) -> dict:
    return {"status": {"phase": phase, **status}}


def by_ref(**overrides):
    return spec(datasets=[{"datasetRef": "web", "weight": 3.0}, {"uri": "s3://b/code"}], **overrides)


def test_uris_only_resolve_to_the_same_spec():
    res = resolve("ns", "r", spec(), {}, {}, CFG)
    assert (res.waiting, res.failure) == ("", "")
    assert res.spec == spec()


def test_a_missing_or_unready_dataset_is_waited_for_by_name():
    assert resolve("ns", "r", by_ref(), {"web": None}, {}, CFG).waiting == (
        "waiting for Dataset web (not found)"
    )
    res = resolve("ns", "r", by_ref(), {"web": obj("Running")}, {}, CFG)
    assert res.waiting == "waiting for Dataset web to be Ready (now Running)" and res.spec is None
    assert "now Pending" in resolve("ns", "r", by_ref(), {"web": {}}, {}, CFG).waiting


def test_a_ready_dataset_becomes_its_manifest_uri_keeping_the_weight():
    ready = obj("Ready", manifestUri="s3://b/out/web/manifest.json")
    res = resolve("ns", "r", by_ref(), {"web": ready}, {}, CFG)
    first, second = res.spec.datasets
    assert (first.dataset_ref, first.uri, first.weight) == ("", "s3://b/out/web/manifest.json", 3.0)
    assert second.uri == "s3://b/code"


def test_a_failed_dataset_fails_the_run_naming_the_field_and_its_reason():
    res = resolve("ns", "r", by_ref(), {"web": obj("Failed", message="licence refused")}, {}, CFG)
    assert res.failure == "spec.datasets[0].datasetRef: Dataset web failed: licence refused"
    assert res.spec is None and res.waiting == ""


def test_from_training_run_waits_then_takes_its_last_checkpoint():
    s = spec(init={"fromTrainingRun": "base"})
    assert (
        resolve("ns", "r", s, {}, {"base": None}, CFG).waiting == "waiting for TrainingRun base (not found)"
    )
    assert resolve("ns", "r", s, {}, {"base": obj("Running")}, CFG).waiting == (
        "waiting for TrainingRun base to succeed (now Running)"
    )
    done = obj("EarlyStopped", lastCheckpoint={"uri": "s3://b/base/step-40", "step": 40})
    init = resolve("ns", "r", s, {}, {"base": done}, CFG).spec.init
    assert (init.from_training_run, init.checkpoint_uri) == ("", "s3://b/base/step-40")


def test_from_training_run_that_failed_or_has_no_checkpoint_fails():
    s = spec(init={"fromTrainingRun": "base"})
    assert resolve("ns", "r", s, {}, {"base": obj("Failed")}, CFG).failure == (
        "spec.init.fromTrainingRun: TrainingRun base failed"
    )
    assert resolve("ns", "r", s, {}, {"base": obj("Succeeded")}, CFG).failure == (
        "spec.init.fromTrainingRun: TrainingRun base has no checkpoint"
    )


def test_every_wait_is_listed():
    s = by_ref(init={"fromTrainingRun": "base"})
    res = resolve("ns", "r", s, {"web": None}, {"base": obj("Running")}, CFG)
    assert res.waiting == "waiting for Dataset web (not found), TrainingRun base to succeed (now Running)"


def test_empty_checkpoint_uri_goes_under_the_artifact_location_or_fails():
    s = spec(checkpoint={"uri": ""})
    res = resolve("ns", "r", s, {}, {}, CFG)
    assert res.failure.startswith("spec.checkpoint.uri: empty") and "CAPSTAN_ARTIFACT_URI" in res.failure
    cfg = OperatorConfig(artifact_uri="s3://art/")
    assert resolve("team", "llm", s, {}, {}, cfg).spec.checkpoint.uri == "s3://art/team/llm/checkpoints"


def test_replay_without_waits_for_the_run_then_takes_its_checkpoint_root():
    s = spec(init={"replayWithout": "old"})
    assert resolve("ns", "r", s, {}, {"old": obj("Running")}, CFG).waiting == (
        "waiting for TrainingRun old to succeed (now Running)"
    )
    done = obj("Succeeded", outputUri="s3://b/old", lastCheckpoint={"uri": "s3://b/old/step-40", "step": 40})
    init = resolve("ns", "r", s, {}, {"old": done}, CFG).spec.init
    assert (init.replay_without, init.replay_from, init.checkpoint_uri) == (None, "s3://b/old", "")
    assert "replayWithout" not in init.to_wire()
    assert resolve("ns", "r", s, {}, {"old": obj("Failed")}, CFG).failure == (
        "spec.init.replayWithout: TrainingRun old failed"
    )
