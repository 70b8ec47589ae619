"""kopf glue: watch the four kinds and their children, and hand every change to the controller's
work queue as the key of the Capstan resource it concerns. The reconcilers do the rest.

Only `on.event` handlers: kopf then stores nothing on the objects (no finalizers, no progress
annotations), so deleting a resource never waits for the operator, and an operator restart
re-lists everything and reconciles it from what it finds.
"""

from __future__ import annotations

from typing import Any

import kopf

from capstan_api import KINDS
from capstan_api.common import GROUP, VERSION
from capstan_operator import children
from capstan_operator.controller import Controller

# Child kinds whose changes matter to their owner's status. Not pods: the Job's counters
# (active, ready, failed, terminating) and a Deployment's readyReplicas move with every pod
# change the reconcilers act on, and at 1,000 TrainingRuns pod events were most of what kopf
# decoded; reconcilers list pods only when a Job's counters say something is off.
CHILDREN = (("batch", "v1", "jobs"), ("apps", "v1", "deployments"))
KIND_BY_LABEL = {k.lower(): k for k in KINDS}


def register(registry: kopf.OperatorRegistry, controller: Controller) -> None:
    """Route events of every kind and of its labelled children to `controller`.

    A resource's own events enqueue it only when it is new or its generation moved (like
    controller-runtime's GenerationChangedPredicate): the operator's status writes would otherwise
    each cost a reconcile that finds nothing new. Reconcilers ask for a requeue when they need
    to look again, and the children's events wake their owner. The handlers are coroutines: they
    only enqueue (a lock and a heap push), so they run on kopf's loop, not via its thread pool."""
    generations: dict[tuple[str, str, str], int] = {}

    for info in KINDS.values():

        async def on_resource(
            event: dict, name: str, namespace: str, body: Any, _kind: str = info.kind, **_: Any
        ) -> None:
            key = (_kind, namespace, name)
            if event.get("type") == "DELETED":
                generations.pop(key, None)
                controller.forget(*key)
                return
            controller.observe(key, event["object"])
            generation = int(body.get("metadata", {}).get("generation") or 0)
            if generations.get(key) != generation:
                generations[key] = generation
                controller.enqueue(*key)

        kopf.on.event(GROUP, VERSION, info.plural, id=f"enqueue-{info.plural}", registry=registry)(
            on_resource
        )

    async def on_child(labels: dict, namespace: str, **_: Any) -> None:
        kind = KIND_BY_LABEL.get(labels.get(children.LABEL_KIND, ""))
        owner = labels.get(children.LABEL_OWNER)
        if kind and owner:
            controller.enqueue(kind, namespace, owner)

    for resource in CHILDREN:
        kopf.on.event(
            *resource,
            id=f"owner-of-{resource[-1]}",
            labels={children.LABEL_KIND: kopf.PRESENT, children.LABEL_OWNER: kopf.PRESENT},
            registry=registry,
        )(on_child)
