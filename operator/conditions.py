"""Pure helpers for status.conditions (metav1.Condition shape, wire names); the reconcilers
reach them through `reconcile_common.StatusDraft`.

A condition is rewritten only when something in it changes, and lastTransitionTime moves only when
its status flips, so a reconcile that finds nothing new writes nothing and cannot loop on its own
status updates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from capstan_operator.api.common import now_rfc3339


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
