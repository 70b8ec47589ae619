"""Every example in manifests/examples/ is valid for the model of its kind (as the CRD and the
workload would read it), and says in its header what `kubectl get` shows."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from capstan_operator.api import KINDS

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid_and_documented(path: Path):
    text = path.read_text()
    assert text.startswith("#") and "kubectl get" in text, f"{path.name}: header comment missing"
    for doc in yaml.safe_load_all(text):
        assert doc["kind"] in KINDS, f"{path.name}: unknown kind {doc['kind']}"
        KINDS[doc["kind"]].spec.model_validate(doc["spec"])
