"""The operator's settings, handlers' status content and metrics, without a cluster."""

from __future__ import annotations

import asyncio

import kopf
from prometheus_client import generate_latest

from capstan_api import KINDS
from capstan_operator import handlers, metrics
from capstan_operator.config import OperatorConfig
from capstan_operator.controller import Controller
from capstan_operator.main import build_settings, reconcilers


def test_standalone_by_default_with_annotation_storage():
    s = build_settings(OperatorConfig(), "pod-a")
    assert s.peering.standalone and not s.peering.mandatory
    assert isinstance(s.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert s.posting.reporting_component == "capstan-operator"
    assert s.posting.reporting_instance == "pod-a"


def test_with_leader_election_kopf_stays_standalone_and_the_workers_wait_for_the_lease():
    cfg = OperatorConfig(leader_election=True, namespaces=("a", "b"))
    s = build_settings(cfg, "pod-a")
    assert s.peering.standalone and not s.peering.mandatory  # every replica watches
    assert not Controller({}, cfg).leading.is_set()
    assert Controller({}, OperatorConfig()).leading.is_set()


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


def test_metrics_count_each_outcome_and_the_work_queue_as_controller_runtime_names_it(monkeypatch):
    from capstan_operator import kube
    from capstan_operator.status import Outcome

    answers = iter([Outcome(), Outcome(requeue_after=5.0), ValueError("boom")])

    def reconcile(body, cfg):
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    monkeypatch.setattr(kube, "get_custom", lambda *a: {"metadata": {"name": "r", "resourceVersion": "1"}})
    c = Controller({"Evaluation": reconcile}, OperatorConfig())
    sample = metrics.REGISTRY.get_sample_value

    def count(outcome):
        return sample("capstan_reconciles_total", {"kind": "Evaluation", "outcome": outcome}) or 0

    before = {o: count(o) for o in ("ok", "requeue", "error")}
    retries = sample("workqueue_retries_total", {"name": "capstan"}) or 0
    for _ in range(3):
        c.process(("Evaluation", "ns", "r"))
    assert {o: count(o) - before[o] for o in before} == {"ok": 1, "requeue": 1, "error": 1}
    assert sample("workqueue_retries_total", {"name": "capstan"}) == retries + 1
    assert sample("workqueue_depth", {"name": "capstan"}) == 1  # the failed key, queued again
    text = generate_latest(metrics.REGISTRY).decode()
    assert "retry" not in text.replace("workqueue_retries", "") and "invalid" not in text
