"""Shared pieces of the API models: the base model, conditions, CEL helpers.

Every kind's spec lives in its own module beside this one. Conventions:
- Python attribute names are snake_case; the wire (and CRD) names are lowerCamel aliases.
- Unknown keys are rejected, naming the key.
- Every field has a description that starts with its own wire name ("shardSize is ...").
- Cross-field rules are written twice on purpose: as CEL (`cel(...)`) for the API server, and as a
  pydantic validator for the workload CLIs, with the same message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

GROUP = "capstan.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Patterns the API server and the models both apply (Go RE2 and pydantic agree on these).
# A DNS-1123 subdomain, what Kubernetes allows as the name of a custom resource.
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
NAME_PATTERN = f"^{DNS_SUBDOMAIN}$"
OPTIONAL_NAME_PATTERN = f"^({DNS_SUBDOMAIN})?$"
# A URI with a scheme (s3://, file://, gs://): a bare path would quietly mean the pod's own disk.
_URI = r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+"
URI_PATTERN = f"^{_URI}$"
OPTIONAL_URI_PATTERN = f"^({_URI})?$"
# SPDX licence ids (and LicenseRef-... for custom ones): letters, digits, '.', '-', '+'.
_SPDX = r"[A-Za-z0-9][A-Za-z0-9.+-]*"
SPDX_PATTERN = f"^{_SPDX}$"
OPTIONAL_SPDX_PATTERN = f"^({_SPDX})?$"


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown keys rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in YAML/JSON: camelCase, defaults included, no nulls."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def to_wire_set(self) -> dict[str, Any]:
        """`to_wire` less every field at its default: what identifies the work. A field a newer
        version adds with a default leaves it unchanged, so an upgrade re-runs nothing."""
        return self.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """`x-kubernetes-validations` for a model's or field's json_schema_extra: (rule, message) pairs."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


def cel_set(field: str) -> str:
    """CEL: a string field is present and non-empty (works with or without schema defaulting)."""
    return f"(has(self.{field}) && self.{field} != '')"


def immutable(name: str) -> dict[str, Any]:
    """A field the API server refuses to change after creation."""
    return cel(("self == oldSelf", f"{name} is immutable"))


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One entry of status.conditions, as in metav1.Condition."""

    type: str = Field(description="type of the condition, e.g. Ready, Waiting, Failed.")
    status: ConditionStatus = Field(description="status of the condition: True, False or Unknown.")
    reason: str = Field(default="", description="reason is a CamelCase word for the last transition.")
    message: str = Field(default="", description="message is a human-readable explanation.")
    last_transition_time: str = Field(
        default="", description="lastTransitionTime is when the status last changed (RFC 3339)."
    )
    observed_generation: int = Field(
        default=0, description="observedGeneration is the spec generation the condition was set for."
    )


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectMeta(BaseModel):
    """The parts of metadata the workloads read; everything else is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    namespace: str = Field(default="default", max_length=63, pattern=NAME_PATTERN)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


T = TypeVar("T", bound=BaseModel)


class InvalidResource(ValueError):
    """A resource that failed validation; the message names every offending field."""


def field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: `spec.optimizer.microBatch: Input should be greater than 0`."""
    lines = []
    for err in exc.errors():
        path = field_path(tuple(err["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{path or '<root>'}: {msg}")
    return "\n".join(lines)


def parse_spec(cls: type[T], obj: dict[str, Any], kind: str, source: str = "resource") -> T:
    """Validate a whole resource dict (apiVersion, kind, metadata, spec) and return its spec.

    Raises InvalidResource naming the file and each offending field.
    """
    if not isinstance(obj, dict):
        raise InvalidResource(f"{source}: expected a {kind} resource (a mapping), got {type(obj).__name__}")
    if obj.get("apiVersion") != API_VERSION:
        raise InvalidResource(
            f"{source}: apiVersion: expected {API_VERSION!r}, got {obj.get('apiVersion')!r}"
        )
    if obj.get("kind") != kind:
        raise InvalidResource(f"{source}: kind: expected {kind!r}, got {obj.get('kind')!r}")
    try:
        ObjectMeta.model_validate(obj.get("metadata") or {})
    except ValidationError as exc:
        raise InvalidResource(
            f"{source}: invalid metadata\n{describe_validation_error(exc, 'metadata')}"
        ) from exc
    try:
        return cls.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        raise InvalidResource(f"{source}: invalid {kind}\n{describe_validation_error(exc, 'spec')}") from exc
