"""How the reconcilers read a resource's spec: a wrong value is refused naming the field; a field
this operator version does not know (its CRD is newer, mid-upgrade) is ignored, not fatal."""

from __future__ import annotations

from capstan_api.dataset import DatasetSpec
from capstan_operator.status import read_spec
from tests.unit.operator.resources import dataset


def test_a_wrong_value_is_refused_naming_the_field():
    body = dataset("web", workers=0)
    spec, problem = read_spec(body, DatasetSpec)
    assert spec is None and "spec.workers" in problem


def test_fields_of_a_newer_crd_are_ignored_with_a_warning(caplog):
    body = dataset("web", workers=2, someNewField=5)
    body["spec"]["output"]["someNewSetting"] = "x"
    spec, problem = read_spec(body, DatasetSpec)
    assert problem == "" and spec.workers == 2 and spec.output.uri == "s3://bucket/out"
    assert "spec.someNewField" in caplog.text and "spec.output.someNewSetting" in caplog.text


def test_an_unknown_field_beside_a_wrong_value_is_still_refused():
    spec, problem = read_spec(dataset("web", workers=0, someNewField=5), DatasetSpec)
    assert spec is None and "spec.workers" in problem
