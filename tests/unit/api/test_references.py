"""The two references that let resources applied together wait for each other: a Dataset's
tokenizer.datasetRef and an Evaluation's baselineRef. The models accept each alone and refuse it
beside the field it replaces, naming the rule (the API server's CEL twin is checked by
tests/data/invalid/ on a real server)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from capstan_api.evaluation import EvaluationSpec
from capstan_api.tokenizer import Tokenizer


def test_a_dataset_ref_alone_is_a_given_tokenizer_so_vocab_size_is_not_checked():
    tok = Tokenizer.model_validate({"datasetRef": {"name": "base"}, "vocabSize": 256})
    assert tok.dataset_ref.name == "base"
    with pytest.raises(ValidationError, match="vocabSize must hold"):
        Tokenizer.model_validate({"vocabSize": 256})


@pytest.mark.parametrize("other", [{"uri": "s3://tok/tokenizer.json"}, {"fromModel": "s3://models/llama"}])
def test_a_dataset_ref_beside_uri_or_from_model_is_refused(other):
    with pytest.raises(ValidationError, match="at most one of uri, fromModel or datasetRef may be set"):
        Tokenizer.model_validate({"datasetRef": {"name": "base"}, **other})


def test_a_dataset_ref_is_left_out_of_the_wire_form_when_unset():
    """The workers of older images know no datasetRef: a resolved spec must not name it."""
    assert "datasetRef" not in Tokenizer().to_wire()


def test_a_baseline_ref_alone_is_accepted_and_beside_a_results_uri_refused():
    model = {"uri": "s3://ckpt/step-00000100"}
    spec = EvaluationSpec.model_validate({"model": model, "baselineRef": {"name": "base"}})
    assert spec.baseline_ref.name == "base" and spec.baseline_results_uri == ""
    assert "baselineRef" not in EvaluationSpec.model_validate({"model": model}).to_wire()
    both = {"model": model, "baselineRef": {"name": "base"}, "baselineResultsUri": "s3://e/results.json"}
    with pytest.raises(ValidationError, match="at most one of baselineRef or baselineResultsUri"):
        EvaluationSpec.model_validate(both)
