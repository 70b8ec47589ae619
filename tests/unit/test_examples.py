"""manifests/examples/: every resource is valid for the API models (what the API server and the
workload CLIs accept), each file says what `kubectl get` shows, and pipeline.yaml is one
self-contained chain whose references all resolve inside it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from capstan_api import KINDS
from capstan_api.common import parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_there_is_an_example_per_kind_and_the_pipeline():
    assert {p.name for p in FILES} >= {
        "dataset.yaml",
        "trainingrun.yaml",
        "evaluation.yaml",
        "deployment.yaml",
        "deployment-canary.yaml",
        "pipeline.yaml",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_is_valid_and_says_what_kubectl_get_shows(path: Path):
    for doc in docs(path):
        parse_spec(KINDS[doc["kind"]].spec, doc, doc["kind"], str(path))
        assert "namespace" not in doc["metadata"], "examples apply to whatever namespace -n names"
    header = path.read_text().split("\napiVersion:")[0]
    assert header.startswith("#") and "kubectl get" in header, (
        f"{path.name}: the header comment should say what kubectl get shows"
    )


def test_pipeline_is_one_chain_in_dependency_order():
    """Each resource names only ones above it in the file, and the chain goes from raw text through
    pretraining and SFT to a gated, served assistant."""
    chain = docs(EXAMPLES / "pipeline.yaml")
    above: set[tuple[str, str]] = set()
    for doc in chain:
        for ref in references(doc):
            assert ref in above, f"{doc['kind']} {doc['metadata']['name']} names {ref}, not above it"
        above.add((doc["kind"], doc["metadata"]["name"]))
    by_name = {(d["kind"], d["metadata"]["name"]): d["spec"] for d in chain}
    served = by_name[("Deployment", "demo-chat")]["model"]["evaluationRef"]["name"]
    evaluation = by_name[("Evaluation", served)]
    assert {"metric": "task.heldout.accuracy", "min": 0.8} in evaluation["gates"]
    tuned = by_name[("TrainingRun", evaluation["model"]["trainingRunRef"]["name"])]
    assert tuned["objective"] == "sft"
    base = by_name[("TrainingRun", tuned["init"]["fromTrainingRun"])]
    assert base.get("objective", "pretrain") == "pretrain" and "init" not in base
    # Sized for two CPU cores: the tiny preset, short sequences, a few hundred steps at most.
    assert base["model"]["preset"] == "test" and base["optimizer"]["totalSteps"] <= 400
    runs = [s for (kind, _), s in by_name.items() if kind == "TrainingRun"]
    assert all(r["resources"].get("gpusPerNode", 0) == 0 for r in runs)
    assert by_name[("Deployment", "demo-chat")]["replicas"] == 1


def test_example_names_do_not_collide_and_references_resolve():
    """Every example can be applied into one namespace beside the others, and each resource it
    names (datasetRef, trainingRunRef, evaluationRef) is one of the examples."""
    seen: dict[tuple[str, str], str] = {}
    for path in FILES:
        for doc in docs(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in seen, f"{key} is in both {seen[key]} and {path.name}"
            seen[key] = path.name
    for path in FILES:
        for doc in docs(path):
            for kind, name in references(doc):
                assert (kind, name) in seen, f"{path.name}: {kind} {name} is in no example"


def references(doc: dict) -> list[tuple[str, str]]:
    spec = doc["spec"]
    model = spec.get("model") or {}
    refs = [("Dataset", s["datasetRef"]) for s in spec.get("datasets", []) if s.get("datasetRef")]
    refs += [("Dataset", spec["datasetRef"]["name"])] if spec.get("datasetRef") else []
    refs += [("TrainingRun", model["trainingRunRef"]["name"])] if model.get("trainingRunRef") else []
    refs += [("Evaluation", model["evaluationRef"]["name"])] if model.get("evaluationRef") else []
    refs += [("Deployment", model["deploymentRef"]["name"])] if model.get("deploymentRef") else []
    refs += (
        [("TrainingRun", spec["init"]["fromTrainingRun"])]
        if (spec.get("init") or {}).get("fromTrainingRun")
        else []
    )
    tokenizer = spec.get("tokenizer") or {}
    refs += [("Dataset", tokenizer["datasetRef"]["name"])] if tokenizer.get("datasetRef") else []
    refs += [("Evaluation", spec["baselineRef"]["name"])] if spec.get("baselineRef") else []
    return refs
