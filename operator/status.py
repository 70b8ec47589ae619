"""The status a reconcile writes: the Outcome every reconciler returns, and a draft that writes
only what changed.

Conditions have the metav1.Condition shape (wire names). A condition is rewritten only when
something in it changes, and lastTransitionTime moves only when its status flips, so a reconcile
that finds nothing new writes nothing and cannot loop on its own status updates."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from capstan_api import status as st
from capstan_api.common import describe_validation_error, now_rfc3339
from capstan_api.status import Phase

log = logging.getLogger("capstan.operator")


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    """The condition of this type, or None."""
    for c in conditions or ():
        if c.get("type") == type_:
            return dict(c)
    return None


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Return (new condition list, changed). Order is kept; a new type is appended."""
    if status not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, got {status!r}")
    old = find(conditions, type_)
    new = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": (
            old["lastTransitionTime"]
            if old and old.get("status") == status and old.get("lastTransitionTime")
            else (now or now_rfc3339())
        ),
    }
    if old == new:
        return [dict(c) for c in conditions or ()], False
    out = [new if c.get("type") == type_ else dict(c) for c in conditions or ()]
    if old is None:
        out.append(new)
    return out, True


def remove_condition(
    conditions: Sequence[Mapping[str, Any]] | None, type_: str
) -> tuple[list[dict[str, Any]], bool]:
    """Return (list without that type, changed)."""
    out = [dict(c) for c in conditions or () if c.get("type") != type_]
    return out, len(out) != len(conditions or ())


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    c = find(conditions, type_)
    return bool(c and c.get("status") == "True")


@dataclass
class Outcome:
    status: dict[str, Any] = field(default_factory=dict)
    """status is a merge patch for the status subresource (wire names); empty: nothing changed."""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """events are (type Normal|Warning, reason, message) to record on the resource."""
    requeue_after: float | None = None
    """requeue_after is when to look again (seconds); None: only on the next change."""


class StatusDraft:
    """The status a reconcile computes, compared against the stored one at the end."""

    def __init__(self, body: dict):
        self.old: dict[str, Any] = dict(body.get("status") or {})
        self.generation = int(body["metadata"].get("generation") or 0)
        self.fields: dict[str, Any] = {}
        self.conditions = [dict(c) for c in self.old.get("conditions") or []]
        self._conditions_changed = False
        self.events: list[tuple[str, str, str]] = []

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, self.old.get(key, default))

    def set(self, **fields: Any) -> StatusDraft:
        self.fields.update(fields)
        return self

    def condition(self, type_: str, status: str, reason: str, message: str) -> StatusDraft:
        """Set a condition; lastTransitionTime moves only when its status flips."""
        self.conditions, changed = set_condition(
            self.conditions, type_, status, reason, message, self.generation
        )
        self._conditions_changed |= changed
        return self

    def find(self, type_: str) -> dict | None:
        return find(self.conditions, type_)

    def clear(self, *types: str) -> StatusDraft:
        for type_ in types:
            self.conditions, changed = remove_condition(self.conditions, type_)
            self._conditions_changed |= changed
        return self

    def event(self, type_: str, reason: str, message: str) -> StatusDraft:
        self.events.append((type_, reason, message))
        return self

    def phase(self, phase: str, message: str, reason: str = "") -> StatusDraft:
        """Set the phase and summary; a change of phase is recorded as an Event."""
        if phase != self.old.get("phase") and phase != self.fields.get("phase"):
            warn = phase == Phase.FAILED
            self.event("Warning" if warn else "Normal", reason or phase, message)
        return self.set(phase=phase, message=message)

    def fail(self, reason: str, message: str, companion: str = "", finished: bool = True) -> StatusDraft:
        """Phase Failed with a Failed condition; `companion` (the condition a user waits on, e.g.
        Ready) turns False; `finished` stamps completionTime once (a Deployment can recover)."""
        self.condition(st.FAILED, "True", reason, message)
        if companion:
            self.condition(companion, "False", reason, message.split("\n", 1)[0])
        if finished:
            self.set(completionTime=self.get("completionTime") or now_rfc3339())
        return self.phase(Phase.FAILED, message, reason)

    def finished(self, *phases: str) -> bool:
        """True when the stored status already reached one of `phases` for this generation."""
        return self.old.get("phase") in phases and self.old.get("observedGeneration") == self.generation

    def outcome(self, requeue_after: float | None = None) -> Outcome:
        patch = {k: v for k, v in self.fields.items() if self.old.get(k) != v}
        if self._conditions_changed:
            patch["conditions"] = self.conditions
        if self.old.get("observedGeneration") != self.generation:
            patch["observedGeneration"] = self.generation
        return Outcome(status=patch, events=self.events, requeue_after=requeue_after)


def seconds_since(rfc3339: str | None) -> float:
    if not rfc3339:
        return 0.0
    t = datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - t).total_seconds()


Spec = TypeVar("Spec", bound=BaseModel)


def read_spec(body: dict, cls: type[Spec]) -> tuple[Spec | None, str]:
    """(the validated spec, "") or (None, one line per problem naming the field): the API
    server's schema already refused most bad specs, so this catches what CEL cannot express."""
    spec = body.get("spec") or {}
    try:
        return cls.model_validate(spec), ""
    except ValidationError as exc:
        unknown = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
        if not unknown or len(unknown) < len(exc.errors()):
            return None, describe_validation_error(exc, "spec")
    # Only fields this operator does not know: the API server's schema accepted them, so its CRD is
    # newer (CRDs upgraded before the operator, as docs/install.md says; its defaults fill new
    # fields in): reconcile with what this version knows rather than fail the resource for good.
    known = copy.deepcopy(spec)
    for loc in unknown:
        *parents, leaf = loc
        node = known
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    log.warning("%s: ignoring field(s) this operator does not know: %s", _name(body), _paths(unknown))
    try:
        return cls.model_validate(known), ""
    except ValidationError as exc:
        return None, describe_validation_error(exc, "spec")


def _paths(locs: list[tuple]) -> str:
    return ", ".join("spec." + ".".join(str(p) for p in loc) for loc in locs)


def _name(body: dict) -> str:
    meta = body.get("metadata") or {}
    return f"{body.get('kind', 'resource')} {meta.get('namespace', '')}/{meta.get('name', '')}"
