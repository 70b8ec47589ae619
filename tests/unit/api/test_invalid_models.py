"""The invalid resources the API server refuses are refused by the models too (the workload CLIs'
`-f` path), naming the same field."""

from __future__ import annotations

import pytest

from capstan_api import KINDS
from capstan_api.common import InvalidResource, parse_spec
from tests.support.invalid_cases import load_cases

CASES = load_cases()


def test_there_are_at_least_twenty_invalid_resources():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", [c for c in CASES if c.patch is None], ids=lambda c: c.path.stem)
def test_model_names_the_field(case):
    obj = case.resource
    with pytest.raises(InvalidResource) as err:
        parse_spec(KINDS[obj["kind"]].spec, obj, obj["kind"], str(case.path))
    assert str(case.path) in str(err.value)
    assert any(case.named_by(line) for line in str(err.value).splitlines()), str(err.value)


@pytest.mark.parametrize("case", [c for c in CASES if c.patch is not None], ids=lambda c: c.path.stem)
def test_immutable_cases_start_from_a_valid_resource(case):
    """Only the API server sees the old object, so immutability is its check alone; the resource
    before the patch must be valid or the server test would prove nothing."""
    obj = case.resource
    parse_spec(KINDS[obj["kind"]].spec, obj, obj["kind"], str(case.path))
