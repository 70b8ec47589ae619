"""The exclusion rules a preparation applies: the spec's inline ones plus its list file, and the
record of what they removed (`excluded.jsonl` beside the manifest: what replay and lineage read)."""

from __future__ import annotations

import json

import yaml
from pydantic import ValidationError

from capstan_api.common import describe_validation_error
from capstan_api.dataset import DatasetSpec
from capstan_api.exclusions import ExclusionRules, Matcher, merged
from capstan_trainer import storage
from capstan_trainer.prepare.read import InputError

EXCLUDED_FILE = "excluded.jsonl"
"""EXCLUDED_FILE: one line per removed document, {"id", "url", "rule"}, in id order."""


def load_rules(spec: DatasetSpec) -> tuple[ExclusionRules, list[str]]:
    """Inline rules, then the list file's, with their labels; an unreadable or malformed file
    names spec.exclusions.uri."""
    ex = spec.exclusions
    if ex is None:
        return ExclusionRules(), []
    rules = ExclusionRules(document_ids=ex.document_ids, urls=ex.urls, patterns=ex.patterns)
    if not ex.uri:
        return rules, rules.labels()
    try:
        doc = yaml.safe_load(storage.read_bytes(ex.uri)) or {}  # YAML is a superset of JSON
    except FileNotFoundError as exc:
        raise InputError(f"spec.exclusions.uri: {ex.uri} does not exist") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"spec.exclusions.uri: {ex.uri} is neither JSON nor YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise InputError(
            f"spec.exclusions.uri: {ex.uri} must hold a mapping with documentIds, urls, patterns"
        )
    try:
        listed = ExclusionRules.model_validate(doc)
    except ValidationError as exc:
        raise InputError(f"{ex.uri}: " + describe_validation_error(exc, "spec.exclusions.uri")) from exc
    return merged(rules, listed, f"spec.exclusions.uri({ex.uri}).")


def matcher(spec: DatasetSpec) -> Matcher:
    return Matcher(load_rules(spec)[0])


def read_excluded(dataset_uri: str) -> list[dict]:
    """A revision's removed documents ([] when it removed none or predates exclusions)."""
    uri = storage.join(dataset_uri.removesuffix("manifest.json").rstrip("/"), EXCLUDED_FILE)
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_bytes(uri).decode().splitlines() if line.strip()]
