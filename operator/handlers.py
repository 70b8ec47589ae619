"""kopf handlers: SKELETON. Each kind's handler validates the spec with its model and sets
`status.phase: Pending` with a Waiting condition saying what it waits for.

This is the scaffolding the real reconcilers (issue 7, `reconcile_<kind>.py`) replace: it proves
the wiring (watch, validate, status, events, metrics) end to end, not the feature.

Handlers are sync on purpose: kopf runs them in its thread pool, so nothing here can block the
event loop. They are thin: validation and the status content come from pure functions.
"""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from capstan_operator import metrics
from capstan_operator.api import KINDS
from capstan_operator.api.common import GROUP, VERSION, describe_validation_error
from capstan_operator.api.status import FAILED, WAITING
from capstan_operator.conditions import phase_patch

# What each kind waits for until its reconciler exists (shown in status.message and the condition).
WAITS_FOR = {
    "Dataset": "the Dataset reconciler to start the preparation Job",
    "TrainingRun": "the TrainingRun reconciler to resolve its datasets and start the trainer gang",
    "Evaluation": "the Evaluation reconciler to start the evaluation Job",
    "Deployment": "the Deployment reconciler to roll out the serving pods",
}


def accepted_status(kind: str, status: Any, generation: int) -> dict[str, Any]:
    """Status patch for a valid spec: Pending, Waiting=True."""
    message = f"spec is valid; waiting for {WAITS_FOR[kind]}"
    return phase_patch(status, "Pending", (WAITING, "True", "Accepted", message), generation)


def invalid_status(status: Any, message: str, generation: int) -> dict[str, Any]:
    """Status patch for a spec the model refuses (the API server's schema let it through)."""
    return phase_patch(status, "Failed", (FAILED, "True", "InvalidSpec", message), generation)


def accept(kind: str, spec: Any, status: Any, meta: Any, body: Any, patch: kopf.Patch, **_: Any) -> None:
    with metrics.observe(kind):
        generation = int(meta.get("generation") or 0)
        try:
            KINDS[kind].spec.model_validate(dict(spec))
        except ValidationError as exc:
            message = describe_validation_error(exc, "spec").replace("\n", "; ")
            changes = invalid_status(status, message, generation)
            patch.status.update(changes)
            if changes:
                kopf.warn(body, reason="InvalidSpec", message=message)
            raise kopf.PermanentError(f"invalid {kind}: {message}") from exc
        changes = accepted_status(kind, status, generation)
        patch.status.update(changes)
        if "phase" in changes:
            kopf.info(body, reason="Pending", message=changes["message"])


def register(registry: kopf.OperatorRegistry) -> None:
    """Register create/resume/update handlers for every kind in `registry`."""
    for info in KINDS.values():

        def handler(_kind: str = info.kind, **kwargs: Any) -> None:
            accept(_kind, **kwargs)

        for on in (kopf.on.create, kopf.on.resume, kopf.on.update):
            on(GROUP, VERSION, info.plural, id="accept", registry=registry)(handler)
