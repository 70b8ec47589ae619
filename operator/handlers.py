"""kopf glue: watch the four kinds and their children, and hand every change to the controller's
work queue as the key of the Capstan resource it concerns. The reconcilers do the rest.

Only `on.event` handlers: kopf then stores nothing on the objects (no finalizers, no progress
annotations), so deleting a resource never waits for the operator, and an operator restart
re-lists everything and reconciles it from what it finds.
"""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from capstan_operator import kube
from capstan_operator.api import KINDS
from capstan_operator.api.common import GROUP, VERSION, describe_validation_error
from capstan_operator.api.status import FAILED, WAITING
from capstan_operator.config import OperatorConfig
from capstan_operator.controller import Controller
from capstan_operator.reconcile_common import Outcome, StatusDraft

# Child kinds the operator creates whose changes matter to their owner's status.
CHILDREN = (("batch", "v1", "jobs"), ("v1", "pods"), ("apps", "v1", "deployments"))
KIND_BY_LABEL = {k.lower(): k for k in KINDS}


def skeleton(body: dict, config: OperatorConfig) -> Outcome:
    """For a kind whose reconciler is not written yet: validate, then Pending + Waiting."""
    kind, draft = body["kind"], StatusDraft(body)
    try:
        KINDS[kind].spec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        message = describe_validation_error(exc, "spec").replace("\n", "; ")
        draft.condition(FAILED, "True", "InvalidSpec", message)
        return draft.phase("Failed", message, "InvalidSpec").outcome()
    message = f"spec is valid; waiting for the {kind} reconciler"
    draft.condition(WAITING, "True", "Accepted", message)
    return draft.phase("Pending", message).outcome()


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    """Route events of every kind and of its labelled children to `controller`.

    A resource's own events enqueue it only when it is new or its generation moved (like
    controller-runtime's GenerationChangedPredicate): the operator's status writes would otherwise
    each cost a reconcile that finds nothing new. Reconcilers ask for a requeue when they need
    to look again, and the children's events wake their owner."""
    generations: dict[tuple[str, str, str], int] = {}

    for info in KINDS.values():

        def on_resource(
            event: dict, name: str, namespace: str, body: Any, _kind: str = info.kind, **_: Any
        ) -> None:
            key = (_kind, namespace, name)
            if event.get("type") == "DELETED":
                generations.pop(key, None)
                controller.forget(*key)
                return
            generation = int(body.get("metadata", {}).get("generation") or 0)
            if generations.get(key) != generation:
                generations[key] = generation
                controller.enqueue(*key)

        kopf.on.event(GROUP, VERSION, info.plural, id=f"enqueue-{info.plural}", registry=registry)(
            on_resource
        )

    def on_child(labels: dict, namespace: str, **_: Any) -> None:
        kind = KIND_BY_LABEL.get(labels.get(kube.LABEL_KIND, ""))
        owner = labels.get(kube.LABEL_OWNER)
        if kind and owner:
            controller.enqueue(kind, namespace, owner)

    for resource in CHILDREN:
        kopf.on.event(
            *resource,
            id=f"owner-of-{resource[-1]}",
            labels={kube.LABEL_KIND: kopf.PRESENT, kube.LABEL_OWNER: kopf.PRESENT},
            registry=registry,
        )(on_child)
