"""The operator's settings, handlers' status content and metrics, without a cluster."""

from __future__ import annotations

import asyncio

import kopf
import pytest
from prometheus_client import generate_latest

from capstan_api import KINDS
from capstan_operator import handlers, metrics
from capstan_operator.config import OperatorConfig
from capstan_operator.controller import Controller
from capstan_operator.main import build_settings, peering_priority, reconcilers


def test_standalone_by_default_with_annotation_storage():
    s = build_settings(OperatorConfig(), "pod-a")
    assert s.peering.standalone and not s.peering.mandatory
    assert isinstance(s.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert s.posting.reporting_component == "capstan-operator"
    assert s.posting.reporting_instance == "pod-a"


def test_leader_election_peers_with_distinct_priorities():
    cfg = OperatorConfig(leader_election=True, namespaces=("a", "b"))
    s = build_settings(cfg, "pod-a")
    assert not s.peering.standalone and s.peering.mandatory
    assert s.peering.name == "capstan" and not s.peering.clusterwide
    assert s.peering.priority == peering_priority("pod-a") > 0
    assert peering_priority("pod-a") != peering_priority("pod-b")


def test_every_kind_has_a_reconciler():
    assert set(reconcilers()) == set(KINDS)


def test_registry_watches_every_kind_and_the_children():
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Controller(reconcilers(), OperatorConfig()))
    plurals = {h.selector.any_name for h in registry._watching.get_all_handlers()}
    # Not pods: their Jobs' and Deployments' status counters carry what the reconcilers act on.
    assert plurals == {info.plural for info in KINDS.values()} | {"jobs", "deployments"}
    assert not list(registry._changing.get_all_handlers()), "no change handlers: nothing stored on objects"


def test_own_events_enqueue_only_new_objects_and_new_generations():
    registry = kopf.OperatorRegistry()
    controller = Controller(reconcilers(), OperatorConfig())
    handlers.register(registry, controller)
    [on_run] = [h.fn for h in registry._watching.get_all_handlers() if h.selector.any_name == "trainingruns"]

    def deliver(type_: str | None, generation: int) -> None:
        body = {"metadata": {"name": "r", "namespace": "ns", "generation": generation}}
        asyncio.run(on_run(event={"type": type_, "object": body}, name="r", namespace="ns", body=body))

    deliver(None, 1)  # the initial listing
    deliver("MODIFIED", 1)  # e.g. the operator's own status write
    assert controller.queue.get() == ("TrainingRun", "ns", "r")
    controller.queue.done(("TrainingRun", "ns", "r"))
    deliver("MODIFIED", 1)
    deliver("MODIFIED", 2)  # a spec change
    assert controller.queue.get() == ("TrainingRun", "ns", "r")
    controller.queue.done(("TrainingRun", "ns", "r"))
    deliver("DELETED", 2)
    deliver("ADDED", 2)  # re-created under the same name
    assert controller.queue.get() == ("TrainingRun", "ns", "r")
    assert len(controller.queue) == 0, "each key was queued once"


def test_metrics_count_outcomes_and_durations_per_kind():
    with metrics.observe("Unit"):
        pass
    with pytest.raises(kopf.TemporaryError), metrics.observe("Unit"):
        raise kopf.TemporaryError("later")
    with pytest.raises(ValueError), metrics.observe("Unit"):
        raise ValueError("boom")
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'capstan_reconciles_total{kind="Unit",outcome="ok"} 1.0' in text
    assert 'capstan_reconciles_total{kind="Unit",outcome="retry"} 1.0' in text
    assert 'capstan_reconciles_total{kind="Unit",outcome="error"} 1.0' in text
    assert 'capstan_reconcile_errors_total{kind="Unit"} 2.0' in text
    assert 'capstan_reconcile_duration_seconds_count{kind="Unit"} 3.0' in text
