"""The generated CRDs: committed files are current, schemas are structural, fields documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from capstan_api import KINDS, crdgen
from capstan_api.workload import QUANTITY_PATTERN

CRDS = {info.kind: crdgen.build_crd(info) for info in KINDS.values()}
# Short names of built-in kinds a user's muscle memory would hit (kubectl api-resources on v1.37).
BUILTIN_SHORT_NAMES = {
    "cm", "cs", "csr", "ds", "deploy", "ep", "eps", "ev", "hpa", "ing", "limits", "netpol", "no", "ns",
    "pc", "pdb", "po", "pv", "pvc", "quota", "rc", "rs", "sa", "sc", "sts", "svc", "crd", "crds",
}  # fmt: skip


def root_schema(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str):
    """Yield (path, node) for every schema node below and including `node`."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def test_committed_crds_match_the_generator():
    assert crdgen.stale_files() == [], "committed CRDs are stale: run `make crds`"
    for name in crdgen.generated_files():
        manifest, chart = (d / name for d in crdgen.OUT_DIRS)
        assert manifest.read_bytes() == chart.read_bytes(), name


def test_check_mode_fails_on_a_stale_file(tmp_path: Path):
    dirs = (tmp_path / "a", tmp_path / "b")
    crdgen.write(dirs)
    assert crdgen.stale_files(dirs) == []
    target = dirs[1] / "datasets.capstan.dev.yaml"
    target.write_text(target.read_text().replace("minItems: 1", "minItems: 2", 1))
    (dirs[0] / "leftover.yaml").write_text("{}\n")
    assert sorted(crdgen.stale_files(dirs)) == sorted([str(target), str(dirs[0] / "leftover.yaml")])


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str):
    """The rules of apiextensions' structural schemas that pydantic's output would break."""
    for path, node in walk(root_schema(kind), kind):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "not", "const", "title"} & node.keys(), path
        if path == f"{kind}.metadata":
            assert node == {"type": "object"}, "metadata may only say it is an object"
            continue
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
        assert node.get("additionalProperties") is not False, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node["type"] == "array":
            assert "items" in node, path
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(flag, True) is True, f"{path}: {flag} must be the OpenAPI v3.0 boolean"


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_description_starts_with_its_wire_name(kind: str):
    bad = []
    for path, node in walk(root_schema(kind), kind):
        name = path.rsplit(".", 1)[-1]
        if path.endswith(("[]", ".*")) or path in (kind, f"{kind}.metadata"):
            continue
        if not node.get("description", "").startswith(name):
            bad.append(f"{path}: {node.get('description', '')[:50]!r}")
    assert bad == []


def test_defaults_are_in_the_schema_and_agree_with_the_models():
    spec = root_schema("TrainingRun")["properties"]["spec"]["properties"]
    assert spec["optimizer"]["default"]["globalBatchTokens"] == 524288
    assert spec["optimizer"]["properties"]["betas"]["default"] == [0.9, 0.95]
    assert spec["resources"]["default"]["minNodes"] == 1
    ds = root_schema("Dataset")["properties"]["spec"]["properties"]
    ngrams = ds["filters"]["properties"]["gopherRepetition"]["properties"]["topNgrams"]["default"]
    assert ngrams[0] == {"n": 2, "maxFraction": 0.2}
    assert ds["tokenizer"]["properties"]["vocabSize"]["default"] == 32000


def test_cross_field_and_immutable_rules_are_lifted_into_cel():
    def rules(kind: str) -> dict[str, str]:
        return {
            r["message"]: path
            for path, node in walk(root_schema(kind), kind)
            for r in node.get("x-kubernetes-validations", [])
        }

    tr = rules("TrainingRun")
    assert tr["minNodes must not exceed maxNodes"] == "TrainingRun.spec.resources"
    assert tr["exactly one of datasetRef or uri must be set"] == "TrainingRun.spec.datasets[]"
    assert tr["model is immutable"] == "TrainingRun.spec.model"
    assert rules("Dataset")["output.uri is immutable"] == "Dataset.spec.output.uri"


def test_bounds_enums_and_patterns_survive():
    props = root_schema("TrainingRun")["properties"]["spec"]["properties"]
    weight = props["datasets"]["items"]["properties"]["weight"]
    assert (weight["minimum"], weight["exclusiveMinimum"]) == (0, True)
    assert props["fsdp"]["properties"]["activationCheckpointing"]["enum"] == ["none", "full"]
    src = root_schema("Dataset")["properties"]["spec"]["properties"]["sources"]
    assert src["items"]["properties"]["licence"]["pattern"].startswith("^")
    assert src["minItems"] == 1
    requests = props["resources"]["properties"]["requests"]
    # A map's values keep their pattern: a request that is not a quantity is refused.
    assert requests["additionalProperties"]["type"] == "string"
    assert requests["additionalProperties"]["pattern"] == QUANTITY_PATTERN


def test_optional_status_fields_become_their_inner_type():
    status = root_schema("TrainingRun")["properties"]["status"]["properties"]
    assert status["loss"]["type"] == "number"
    assert "default" not in status["loss"]
    assert status["lastCheckpoint"]["type"] == "object"
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


@pytest.mark.parametrize("kind", KINDS)
def test_names_columns_and_subresources(kind: str):
    crd = CRDS[kind]
    names = crd["spec"]["names"]
    assert names["categories"] == ["capstan"]
    assert not set(names["shortNames"]) & BUILTIN_SHORT_NAMES
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    status = root_schema(kind)["properties"]["status"]["properties"]
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns if not c.get("priority")][0] == "Phase"
    for col in columns:
        path = col["jsonPath"]
        filtered = re.fullmatch(r'\.status\.(\w+)\[\?\(@\.(\w+)=="\w+"\)\]\.(\w+)', path)
        if filtered:  # a field of the list items that match: .status.<list>[?(@.<key>=="v")].<field>
            listed, key, leaf = filtered.groups()
            item = status[listed]["items"]["properties"]
            assert key in item and item[leaf]["type"] == col["type"], col
        elif path.startswith(".status."):  # a field, or a nested one (.status.drift.score)
            field = {"properties": status}
            for part in path.removeprefix(".status.").split("."):
                field = field["properties"][part]
            assert field["type"] == col["type"], col


def test_plural_of_deployment_is_capstan_dev():
    assert CRDS["Deployment"]["metadata"]["name"] == "deployments.capstan.dev"


def test_yaml_quotes_words_go_reads_as_booleans():
    text = crdgen.render(CRDS["Dataset"])
    assert "- 'n'" in text or "'n':" in text
    assert yaml.safe_load(text) == CRDS["Dataset"]
