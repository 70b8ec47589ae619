"""The generated CRDs on the real API server: the server fills in exactly the defaults the models
would, `kubectl get` shows the printer columns, and `kubectl get capstan` lists every kind."""

from __future__ import annotations

import pytest
import yaml

from capstan_api import KINDS
from capstan_api.common import API_VERSION, GROUP

pytestmark = pytest.mark.cluster

MINIMAL = {
    "Dataset": {
        "sources": [{"uri": "s3://corpus/*.jsonl", "licence": "CC0-1.0"}],
        "output": {"uri": "s3://o/d"},
    },
    "TrainingRun": {"datasets": [{"datasetRef": "d"}], "model": {"preset": "test"}},
    "Evaluation": {"model": {"uri": "s3://ckpt/step-10"}},
    "Deployment": {"model": {"uri": "s3://ckpt/step-10"}},
}


def test_server_defaults_equal_the_models_defaults(cluster, capstan_crds, namespace):
    for kind, spec in MINIMAL.items():
        info = KINDS[kind]
        name = f"min-{kind.lower()}"
        doc = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}
        cluster.apply(yaml.safe_dump(doc), namespace)
        stored = cluster.get(f"{info.plural}.{GROUP}", name, namespace)["spec"]
        assert stored == info.spec.model_validate(spec).to_wire(), kind


def test_references_that_replace_a_uri_are_accepted_alone(cluster, capstan_crds, namespace):
    """The CEL twins of the models' rules: a tokenizer from another Dataset needs no vocabSize room,
    and a baseline Evaluation by name is accepted; the stored spec keeps the reference."""
    dataset = MINIMAL["Dataset"] | {"tokenizer": {"datasetRef": {"name": "base"}, "vocabSize": 256}}
    evaluation = MINIMAL["Evaluation"] | {"baselineRef": {"name": "base"}}
    for kind, spec in (("Dataset", dataset), ("Evaluation", evaluation)):
        info = KINDS[kind]
        doc = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "refs"}, "spec": spec}
        cluster.apply(yaml.safe_dump(doc), namespace)
        stored = cluster.get(f"{info.plural}.{GROUP}", "refs", namespace)["spec"]
        assert stored == info.spec.model_validate(spec).to_wire(), kind


def test_printer_columns_and_category(cluster, capstan_crds, namespace):
    for kind, spec in MINIMAL.items():
        doc = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "cols"}, "spec": spec}
        cluster.apply(yaml.safe_dump(doc), namespace)
    header = {
        short: cluster.kubectl("get", short, "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
        for short in ("cds", "tr", "ceval", "cdeploy")
    }
    assert header["cds"] == [
        "NAME",
        "PHASE",
        "STAGE",
        "TOKENS",
        "AGE",
        "REVISION",
        "SHARDS",
        "REMOVED",
        "MESSAGE",
    ]
    assert header["tr"] == [
        "NAME",
        "PHASE",
        "PROGRESS",
        "LOSS",
        "TOKENS/S",
        "DATA",  # DATA REMOVED, split at its space
        "REMOVED",
        "AGE",
        "NODES",
        "EVAL",
        "LOSS",
        "OVERFITTING",
        "MESSAGE",
    ]
    assert header["ceval"] == ["NAME", "PHASE", "PASSED", "AGE", "MODEL", "NEXT", "MESSAGE"]
    assert header["cdeploy"] == [
        "NAME",
        "PHASE",
        "REVISION",
        "CANARY",
        "READY",
        "DATA",
        "REMOVED",
        "AGE",
        "URL",
        "DRIFT",
        "MESSAGE",
    ]
    listed = cluster.kubectl("get", "capstan", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(listed) == sorted(f"{k.kind.lower()}.{GROUP}/cols" for k in KINDS.values())
